"""Every figure renders from a synthetic table and its fits; placeholders say what is missing;
Fig. 1's gray region and Fig. 10's held-out fits are what they claim to be."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml

from qid import figures
from qid.figures import FIGURES
from qid.figures.compare import eval_set_pairs, method_widths, suite_transfer
from qid.figures.draw import make_all
from qid.figures.dynamics import fig12_weight_change, fig14_bitnet
from qid.figures.prediction import fig7_loss_prediction
from qid.figures.projection import LLAMA3_VOCAB, fig1_projection, uniform_loss
from qid.laws import PUBLISHED, UnifiedLaw, fit_all, fit_law, loss_q, unified_from_fit
from qid.schedule import lr_at

ROOT = Path(__file__).resolve().parents[1]
TRUE = UnifiedLaw(k=0.02, alpha=0.25, beta=0.5, gamma=5.0)
# Suite "beta" follows a law 1.6x above "alpha"'s: a fit that saw it predicts it differently.
SUITES = {"alpha": (1.0, {"s": 1e8, "m": 1e9, "l": 1e10}), "beta": (1.6, {"s2": 2e8, "m2": 2e9})}
STEPS = (500, 2000, 8000, 32000)
VARIANTS = [("gptq", 2), ("gptq", 3), ("gptq", 4), ("bnb", 4)]


def synthetic(suites=SUITES, eval_sets=("refinedweb", "wiki"), variants=VARIANTS, seed=0):
    """QiD from a known Eq. (8) with 5% noise; 16-bit losses from an Eq. (3)-shaped law."""
    rng = np.random.default_rng(seed)
    rows = []
    for suite, (scale, sizes) in suites.items():
        for size, n in sizes.items():
            for step in STEPS:
                d = step * 2_097_152.0
                loss16 = ((4.74e19 / n) ** (0.045 / 0.399) + 7.63e10 / d) ** 0.399
                for e, eval_set in enumerate(eval_sets):
                    for method, bits in variants:
                        factor = 1.2 if method == "bnb" else 1.0
                        qid = scale * factor * TRUE.qid(n, d, bits) * np.exp(rng.normal(0, 0.05))
                        rows.append(
                            {
                                "suite": suite,
                                "size": size,
                                "step": step,
                                "tokens": d,
                                "n_params": n,
                                "method": method,
                                "bits": bits,
                                "eval_set": eval_set,
                                "loss_16": loss16 + 0.1 * e,
                                "loss_q": loss16 + 0.1 * e + qid,
                                "qid": qid,
                                "qid_se": 0.05 * qid,
                            }
                        )
    return pd.DataFrame(rows)


def synthetic_weights(sizes=(("s", 1e8), ("l", 1e10)), steps=STEPS, seed=0):
    """qid weights' two tables: changes that shrink per step, and 2 sampled weights per type."""
    rng = np.random.default_rng(seed)
    changes, samples = [], []
    for size, n in sizes:
        for i, step in enumerate(steps):
            for kind in ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"):
                for w in range(2):
                    samples.append(
                        {
                            "suite": "alpha",
                            "size": size,
                            "n_params": n,
                            "step": step,
                            "tokens": step * 2_097_152,
                            "layer_type": kind,
                            "weight": f"{kind}[{w}]",
                            "value": rng.normal(0, 0.02),
                        }
                    )
                if i:
                    between = step - steps[i - 1]
                    changes.append(
                        {
                            "suite": "alpha",
                            "size": size,
                            "n_params": n,
                            "layer_type": kind,
                            "step_from": steps[i - 1],
                            "step": step,
                            "tokens": step * 2_097_152,
                            "steps_between": between,
                            "n_weights": 100,
                            "mean_abs_change": between * 1e-3 / step,
                            "rel_change": between * 1e-2 / step,
                            "mean_abs_weight": 0.02,
                        }
                    )
    return pd.DataFrame(changes), pd.DataFrame(samples)


def synthetic_train(sizes=(("s", 1e8), ("l", 1e10)), bitnet=("s", "l"), steps=200, seed=0):
    """Training logs of qid train: 16-bit for every size, BitNet for the sizes in `bitnet`
    (ahead early, behind late: the paper's pattern)."""
    rng = np.random.default_rng(seed)
    frames = []
    for size, n in sizes:
        step = np.arange(1, steps + 1)
        base = 3 + 5 * np.exp(-step / 40)
        for flag in (False, True) if size in bitnet else (False,):
            gap = (0.3 * (step / steps) - 0.1) if flag else 0
            frames.append(
                pd.DataFrame(
                    {
                        "step": step,
                        "tokens": step * 4096,
                        "loss": base + gap + rng.normal(0, 0.02, steps),
                        "lr": 2e-3 * (2 if flag else 1),
                        "seconds": step * 0.1,
                        "suite": "alpha",
                        "size": size,
                        "n_params": n,
                        "bitnet": flag,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def with_schedules(table: pd.DataFrame) -> pd.DataFrame:
    """The table as if suite alpha trained under cosine and beta under WSD (qid.schedule)."""
    wsd = table.suite == "beta"
    return table.assign(
        schedule=np.where(wsd, "wsd", "cosine"),
        decay_step=np.where(wsd, 24000.0, 100.0),
        lr=[
            lr_at(step, 1e-3, 100, 32000, 0.1, "wsd" if w else "cosine", 0.25 if w else None)
            for step, w in zip(table.step, wsd, strict=True)
        ],
    )


def fitted(table: pd.DataFrame) -> dict:
    return fit_all(table, method="gptq", eval_set="refinedweb")


def text_of(fig: plt.Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic()


@pytest.fixture(scope="module")
def fits(table) -> dict:
    return fitted(table)


def test_every_figure_renders_from_table_and_fits(table, fits, tmp_path, monkeypatch):
    table_path, fits_path = tmp_path / "qid.parquet", tmp_path / "fits.json"
    with_schedules(table).to_parquet(table_path)
    fits_path.write_text(json.dumps(fits))
    texts = {}
    load = figures.load

    def recording(name):
        draw = load(name)

        def record(t, f, **data):
            fig = draw(t, f, **data)
            texts[name] = text_of(fig)
            return fig

        return record

    monkeypatch.setattr(figures, "load", recording)
    changes, samples = synthetic_weights()
    data = {}
    for key, frame in (("weight_changes", changes), ("weight_samples", samples)):
        frame.to_parquet(tmp_path / f"{key}.parquet")
        data[key] = [tmp_path / f"{key}.parquet"]
    train = synthetic_train()
    for i, (_, log) in enumerate(train.groupby(["size", "bitnet"])):  # one file per run
        log.to_parquet(tmp_path / f"train{i}.parquet")
        data.setdefault("train", []).append(tmp_path / f"train{i}.parquet")
    plt.close("all")  # what other tests left open is not make_all's to close
    written = make_all(table_path, fits_path, tmp_path / "figs", data=data)
    assert len(written) == 2 * len(FIGURES) and set(texts) == set(FIGURES)
    for name in FIGURES:
        png = tmp_path / "figs" / f"{name}.png"
        assert png.stat().st_size > 10_000, name
        assert plt.imread(png).shape[0] > 200, name
        # The data has all a figure needs: none of them is a placeholder.
        assert " needs " not in texts[name], (name, texts[name])
    for number in (1, 7, 8, 9, 10, 11, 12, 14):
        assert any(f"Fig. {number} -" in t for t in texts.values()), number
    assert "Eq. (3): Loss16" in texts["fig7_loss_prediction"]
    assert "refinedweb" in texts["fig8_eval_sets"] and "wiki" in texts["fig8_eval_sets"]
    assert "bnb" in texts["fig9_methods"] and "gptq" in texts["fig9_methods"]
    assert plt.get_fignums() == []  # make_all closes what it draws


def test_placeholders_say_what_is_needed_and_what_the_table_has():
    one = synthetic(
        suites={"alpha": SUITES["alpha"]}, eval_sets=("refinedweb",), variants=VARIANTS[:3]
    )
    one.attrs["source"] = "results/qid.parquet"
    fits = fitted(one)
    expected = {
        "fig8_eval_sets": "Fig. 8 needs QiD on at least 2 eval sets for gptq; "
        "results/qid.parquet holds 1 (refinedweb)",
        "fig9_methods": "Fig. 9 needs at least 2 methods at one bit width",
        "fig10_suite_transfer": "Fig. 10 needs at least 2 suites; "
        "results/qid.parquet holds 1 (alpha)",
        "fig12_weight_change": "Fig. 12 needs the weight changes between consecutive "
        "checkpoints (qid weights",
        "fig14_bitnet": "Fig. 14 needs the training logs of a BitNet b1.58 model and its "
        "16-bit twin (a bitnet: block in the config); the logs given: none",
        "lr_schedule": "the schedule figure needs QiD under at least 2 learning-rate schedules "
        "(training.schedule: config/schedules.yaml); results/qid.parquet holds none",
    }
    for name in FIGURES:
        fig = figures.load(name)(one, fits)
        text = " ".join(text_of(fig).split())  # placeholder text is wrapped over lines
        if name in expected:
            assert expected[name] in text, text
            assert len(fig.axes) == 1 and not fig.axes[0].axison
        else:
            assert " needs " not in text, (name, text)
            assert any(ax.axison for ax in fig.axes), name
        plt.close(fig)
    fig = figures.load("fig9_methods")(one, fits)
    assert "2 bits: gptq; 3 bits: gptq; 4 bits: gptq" in " ".join(text_of(fig).split())
    plt.close(fig)


@pytest.mark.parametrize("vocab", [LLAMA3_VOCAB, 4096])
def test_fig1_is_gray_from_ln_vocab_up_and_draws_the_published_laws(table, fits, vocab):
    fig = fig1_projection(table, fits, vocab_size=vocab)
    for ax in fig.axes:
        (gray,) = [p for p in ax.patches if p.get_gid() == "worse-than-uniform"]
        assert gray.get_y() == pytest.approx(np.log(vocab))
        assert gray.get_y() + gray.get_height() == pytest.approx(ax.get_ylim()[1])
    assert f"ln({vocab:,})" in text_of(fig)
    # The 7B 2-bit curve is Eq. (3) + Eq. (8) with the paper's published parameters.
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label() == "2-bit"]
    d, y = line.get_data()
    assert d.max() == pytest.approx(1e14)
    np.testing.assert_allclose(y, loss_q(7e9, d, 2, PUBLISHED), rtol=1e-9)
    assert y[-1] > np.log(LLAMA3_VOCAB)  # the paper's point: 2-bit 7B at 1e14 tokens is gray
    plt.close(fig)


def test_fig7_falls_back_to_measured_16bit_loss_without_eq3(table, fits):
    fig = fig7_loss_prediction(table, {**fits, "loss16": {"skipped": "too few sizes"}})
    text = text_of(fig)
    assert "Eq. (3) not fitted (too few sizes)" in text and "measured Loss16" in text
    plt.close(fig)


def test_fig10_predicts_each_suite_from_a_law_fitted_without_it(table, fits):
    predictions, used = suite_transfer(table, fits)
    assert set(predictions.held_out) == set(SUITES) == set(used)
    keys = ["size", "step", "bits"]
    for suite in SUITES:
        rows = table[(table.method == "gptq") & (table.eval_set == "refinedweb")]
        manual = fit_law(rows[rows.suite != suite], "unified")
        law = unified_from_fit(manual)
        held = rows[rows.suite == suite].sort_values(keys)
        got = predictions[predictions.held_out == suite].sort_values(keys)
        assert len(got) == len(held) == len(SUITES[suite][1]) * len(STEPS) * 3
        assert (got.suite == suite).all()
        want = law.qid(held.n_params.to_numpy(), held.tokens.to_numpy(), held.bits.to_numpy())
        np.testing.assert_allclose(got.predicted.to_numpy(), want, rtol=1e-6)
        # ... and not from the fit on every suite, which has seen the held-out one.
        everything = unified_from_fit(fits["unified"])
        seen = everything.qid(held.n_params.to_numpy(), held.tokens.to_numpy(), held.bits)
        assert not np.allclose(got.predicted.to_numpy(), seen, rtol=0.05)
        assert used[suite]["params"]["beta"]["value"] == pytest.approx(TRUE.beta, abs=0.05)


def test_fig8_pairs_the_same_cells_and_fig9_finds_the_shared_bit_width(table, fits):
    pairs, first, others = eval_set_pairs(table, fits)
    assert (first, others) == ("refinedweb", ["wiki"])
    assert len(pairs) == 5 * len(STEPS) * 3  # gptq cells of both suites
    cell = pairs.iloc[0]
    match = table[
        (table.suite == cell.suite)
        & (table["size"] == cell["size"])
        & (table.step == cell.step)
        & (table.bits == cell.bits)
        & (table.method == "gptq")
    ].set_index("eval_set")
    assert cell.qid_a == match.qid["refinedweb"] and cell.qid_b == match.qid["wiki"]
    assert method_widths(table, fits) == {4.0: ["bnb", "gptq"]}


@pytest.mark.parametrize(
    "name",
    [
        "fig1_projection",
        "fig7_loss_prediction",
        "fig8_eval_sets",
        "fig9_methods",
        "fig10_suite_transfer",
        "fig11_qid_surface",
        "fig12_weight_change",
        "fig14_bitnet",
    ],
)
def test_captions_render_for_one_and_several_suites_and_eval_sets(name):
    """The captions are Jinja templates rendered by `snakemake --report` with trim_blocks."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    small = {
        **config,
        "eval_sets": dict(list(config["eval_sets"].items())[:1]),
        "methods": {"rtn": {"bits": [2, 3, 4]}},
    }
    big = {**config, "suites": {**config["suites"], "other": {}}}
    template = (ROOT / "workflow" / "report" / f"{name}.rst").read_text()
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    texts = {}
    for label, c in (("small", small), ("big", big)):
        text = env.from_string(template).render(snakemake=SimpleNamespace(config=c))
        assert "{" not in text and f"Fig. {name[3:].split('_')[0]}" in text
        publish_parts(text, writer="html", settings_overrides={"halt_level": 2})
        texts[label] = text
    placeholder = {
        "fig8_eval_sets": "small",
        "fig9_methods": "small",
        "fig10_suite_transfer": "small",
    }
    for label, text in texts.items():
        assert ("placeholder" in text) == (placeholder.get(name) == label), (name, label)


def test_figures_module_registers_the_paper_figures():
    assert list(FIGURES) == [
        "fig1_projection",
        "fig2_qid_vs_tokens",
        "fig3_tokens_law",
        "fig4_size_law",
        "fig5_bits_law",
        "fig6_unified_law",
        "fig7_loss_prediction",
        "fig8_eval_sets",
        "fig9_methods",
        "fig10_suite_transfer",
        "fig11_qid_surface",
        "fig12_weight_change",
        "fig14_bitnet",
        "forms_compare",
        "lr_schedule",
    ]
    for name in FIGURES:
        assert (ROOT / "workflow" / "report" / f"{name}.rst").exists(), name
    assert uniform_loss(LLAMA3_VOCAB) == pytest.approx(11.7617, abs=1e-4)


def test_fig12_draws_the_change_per_step_of_every_layer_type_and_size():
    changes, samples = synthetic_weights()
    fig = fig12_weight_change(pd.DataFrame(), {}, changes, samples)
    assert len(fig.axes) == 3 * 4
    top = fig.axes[0]  # query_key_value, mean |dW| per step
    assert top.get_title() == "query_key_value"
    lines = {ln.get_label(): ln for ln in top.lines}
    assert set(lines) == {"s (N=100M)", "l (N=10B)"}
    want = changes[(changes["size"] == "l") & (changes.layer_type == "query_key_value")]
    x, y = lines["l (N=10B)"].get_data()
    np.testing.assert_allclose(x, want.tokens)
    np.testing.assert_allclose(y, want.mean_abs_change / want.steps_between)
    # Row 3: the sampled weights of the largest model, one line per weight.
    bottom = fig.axes[8]
    assert len(bottom.lines) == 2
    largest = samples[(samples["size"] == "l") & (samples.layer_type == "query_key_value")]
    assert sorted(bottom.lines[0].get_data()[1]) == sorted(
        largest[largest.weight == "query_key_value[0]"].value
    )
    plt.close(fig)


def test_fig14_pairs_each_bitnet_model_with_its_16bit_twin():
    train = synthetic_train(bitnet=("l",))  # "s" has no BitNet twin: not drawn
    fig = fig14_bitnet(pd.DataFrame(), {}, train)
    assert len(fig.axes) == 3
    early, late, gap = fig.axes
    assert "early steps (1-50)" in early.get_title() and "late steps (100-200)" in late.get_title()
    labels = [ln.get_label() for ln in early.lines if not ln.get_label().startswith("_")]
    assert labels == ["16-bit (peak lr 0.002)", "BitNet b1.58 (peak lr 0.004)"]
    assert "l (N=10B)" in early.get_ylabel()
    x, y = gap.lines[0].get_data()
    runs = train[train["size"] == "l"].set_index(["bitnet", "step"]).loss
    window = 200 // 25
    smooth = {b: runs[b].rolling(window, min_periods=1, center=True).mean() for b in (True, False)}
    np.testing.assert_allclose(y, (smooth[True] - smooth[False]).to_numpy())
    assert y[:20].mean() < 0 < y[-20:].mean()  # ahead early, behind late, as built
    plt.close(fig)
    only16 = synthetic_train(bitnet=())
    text = " ".join(text_of(fig14_bitnet(pd.DataFrame(), {}, only16)).split())
    assert "the logs given: 2 (alpha/l, alpha/s)" in text
    plt.close("all")


def test_fig14_caption_says_placeholder_without_a_bitnet_block():
    from jinja2 import Environment

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    template = (ROOT / "workflow" / "report" / "fig14_bitnet.rst").read_text()
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    render = env.from_string(template).render
    without = {k: v for k, v in config.items() if k != "bitnet"}
    assert "placeholder" in render(snakemake=SimpleNamespace(config=without))
    text = render(snakemake=SimpleNamespace(config=config))
    assert "placeholder" not in text and "h64-l2, h128-l4" in text


def test_figs_9_and_10_ask_for_a_new_qid_fit_where_the_fits_lack_their_keys(table, fits):
    for name, key in (("fig9_methods", "by_method"), ("fig10_suite_transfer", "suite_transfer")):
        old = {k: v for k, v in fits.items() if k != key}
        fig = figures.load(name)(table, old)
        text = " ".join(text_of(fig).split())
        assert f"the fits have no '{key}' (written by an older qid): rerun qid fit" in text
        assert len(fig.axes) == 1 and not fig.axes[0].axison
        plt.close(fig)


def test_fig9_draws_the_per_method_fits_of_qid_fit(table, fits):
    """The dashed lines are fits["by_method"]'s laws, not refitted by the figure."""
    fig = figures.load("fig9_methods")(table, fits)
    text = text_of(fig)
    for method in ("bnb", "gptq"):
        beta = fits["by_method"]["4"][method]["params"]["beta"]["value"]
        assert f"{method}: beta={beta:.2g}" in text
    plt.close(fig)
