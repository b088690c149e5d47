"""Rival law forms fitted side by side (issue 13, item 1): fits.json["compare"]."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from qid.laws import FORMS, compare_forms, fit_all
from qid.laws.forms import qid, tokens_for, values

# Parameters of each generating form, in the range of the paper's fits (small models).
TRUE = {
    "power": {"k": 0.05, "alpha": 0.3, "beta": 0.6, "gamma": 4.0},
    "exponential": {"C": 0.5, "gN": 0.3, "gD": 0.6, "inv_gP": 1.2},
    "lr": {"k": 0.05, "alpha": 0.3, "beta": 0.6, "gamma": 4.0, "delta": 1.5},
}
STEPS = np.arange(1, 9)


def cosine(step: np.ndarray, peak: float = 1e-3) -> np.ndarray:
    """A cosine schedule to 10% of the peak over the grid's steps (no warmup)."""
    return peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (step - 1) / (STEPS[-1] - 1))))


def synthetic(form: str, noise: float = 0.05, seed: int = 0, lr: bool = True) -> pd.DataFrame:
    """Cells generated from `form`: bits 2..8, 3 sizes x 8 steps, log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (1e6, 1e7, 1e8):
        for step in STEPS:
            d = step * 2.5e7
            rate = cosine(step)
            for b in range(2, 9):
                q = qid(FORMS[form], TRUE[form], n, d, b, rate / 1e-3)
                row = {"n_params": n, "tokens": d, "bits": b, "method": "m", "eval_set": "e"}
                rows.append({**row, "lr": rate, "qid": q * np.exp(rng.normal(0, noise))})
    table = pd.DataFrame(rows)
    return table if lr else table.drop(columns="lr")


@pytest.mark.parametrize("form", ["power", "exponential", "lr"])
def test_fit_all_names_the_generating_form_best(form):
    compare = fit_all(synthetic(form))["compare"]
    assert compare["best"] == form
    fit = compare[form]
    for name, value in TRUE[form].items():
        p = fit["params"][name]
        assert p["ci_low"] < value < p["ci_high"], (name, p)


def test_power_beats_its_nested_rival_on_most_noise_draws():
    """lr with delta = 0 is Eq. (8): on power-law data the extra parameter only fits noise, so
    power has the lower held-out error on most draws, and is always among the comparable forms
    and the simplest of them."""
    compares = [compare_forms(synthetic("power", seed=seed)) for seed in range(10)]
    assert sum(c["best"] == "power" for c in compares) >= 8
    assert all(c["simplest"] == "power" for c in compares)


@pytest.mark.parametrize("form", ["power", "exponential"])
def test_without_lr_the_lr_form_is_skipped_and_the_best_still_found(form):
    compare = fit_all(synthetic(form, lr=False))["compare"]
    assert set(compare["lr"]) == {"skipped"}
    assert "no column lr" in compare["lr"]["skipped"]
    assert compare["best"] == form
    assert compare["power"]["n_points"] == compare["exponential"]["n_points"] == compare["rows"]


def test_each_form_has_held_out_errors_aic_and_bic_on_the_same_rows():
    compare = compare_forms(synthetic("power"))
    for form in FORMS:
        fit = compare[form]
        assert fit["n_points"] == compare["rows"] == 3 * 8 * 7
        assert np.isfinite(fit["aic"]) and np.isfinite(fit["bic"])
        families = {f["family"] for f in fit["held_out"]["folds"]}
        assert families == {"size", "steps", "bits"}
        assert len(fit["held_out"]["folds"]) == 3 + 1 + 7
    # lr nests power (delta = 0): more parameters, never a worse in-sample fit, a BIC penalty.
    assert compare["lr"]["aic"] <= compare["power"]["aic"] + 2
    assert compare["best"] in compare["comparable"]


def test_two_bit_widths_get_no_bit_width_fold_and_gp_interval_inverts():
    table = synthetic("exponential")
    compare = compare_forms(table[table.bits.isin([3, 4])])
    assert {f["family"] for f in compare["power"]["held_out"]["folds"]} == {"size", "steps"}
    p = compare_forms(table)["exponential"]["params"]
    assert p["gP"]["value"] == pytest.approx(1 / p["inv_gP"]["value"])
    assert p["gP"]["ci_low"] == pytest.approx(1 / p["inv_gP"]["ci_high"])


def test_lr_partly_known_is_skipped_with_the_count():
    table = synthetic("lr")
    table.loc[table.index[:5], "lr"] = np.nan
    assert "known for 163 of 168 rows" in compare_forms(table)["lr"]["skipped"]


@pytest.mark.parametrize("form", ["power", "exponential", "lr"])
def test_tokens_for_inverts_qid(form):
    d = tokens_for(FORMS[form], TRUE[form], 0.3, 7e9, 3)
    assert qid(FORMS[form], TRUE[form], 7e9, d, 3) == pytest.approx(0.3)


def test_the_summary_tables_every_form_and_names_the_best():
    from qid.report import summary

    text = summary(fit_all(synthetic("exponential", lr=False)))
    section = text[text.index("## Rival forms") :]
    assert "Best (lowest held-out error): **exponential**" in section
    assert "| lr | not fitted: the table has no column lr" in section
    assert "| power | k·D^β / (N^α·P^γ) (Eq. 8) |" in section


def test_the_figure_draws_every_fitted_form_and_names_the_skipped():
    from qid import figures

    table = synthetic("power", lr=False)
    fig = figures.load("forms_compare")(table, fit_all(table))
    text = " ".join(t.get_text() for t in fig.findobj(Text))
    assert "best power" in text and "lr: the table has no column lr" in text
    assert "power\n(best)" in text and "exponential" in text
    stale = figures.load("forms_compare")(table, {})
    assert "rerun qid fit" in " ".join(t.get_text() for t in stale.findobj(Text))
    plt.close(fig)
    plt.close(stale)  # test_figures checks that drawing leaves no figure open


def test_the_caption_renders_as_restructured_text():
    from pathlib import Path
    from types import SimpleNamespace

    import yaml
    from docutils.core import publish_parts
    from jinja2 import Environment

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    template = (root / "workflow" / "report" / "forms_compare.rst").read_text()
    text = (
        Environment(trim_blocks=True)
        .from_string(template)
        .render(snakemake=SimpleNamespace(config=config))
    )
    assert config["fit"]["method"] in text and "{" not in text
    publish_parts(text, writer="html", settings_overrides={"halt_level": 2})


def test_table1_brackets_the_spread_across_the_comparable_forms():
    from qid.table1 import table1, to_markdown

    fits = fit_all(synthetic("lr"))
    fits["compare"]["comparable"] = ["power", "exponential", "lr"]
    frame = table1(fits)
    row = frame[(frame.model == "7B") & (frame.qid == 0.3) & (frame.bits == 3)].iloc[0]
    each = [
        tokens_for(FORMS[f], values(fits["compare"][f]), 0.3, 7e9, 3) / 1e12
        for f in ("power", "exponential", "lr")
    ]
    assert row.forms_low_t == pytest.approx(min(each))
    assert row.forms_high_t == pytest.approx(max(each))
    assert "Brackets: the spread across the forms" in to_markdown(frame)
    published = table1(None)
    assert published.forms.eq("").all() and "Brackets" not in to_markdown(published)


def test_fig1_from_fits_draws_a_band_across_the_comparable_forms():
    from dataclasses import asdict

    from qid.figures.projection import fig1_projection
    from qid.laws.paper import PUBLISHED_LOSS16

    fits = fit_all(synthetic("lr"))
    fits["loss16"] = {"params": {k: {"value": v} for k, v in asdict(PUBLISHED_LOSS16).items()}}

    def bands(compare: dict) -> list:
        fig = fig1_projection(pd.DataFrame(), {**fits, "compare": compare}, source="fits")
        return [c for ax in fig.axes for c in ax.collections if c.get_gid() == "forms-spread"]

    assert len(bands({**fits["compare"], "comparable": ["power", "lr"]})) == 3 * 3
    assert bands({**fits["compare"], "comparable": ["lr"]}) == []  # one form: no spread
    published = fig1_projection(pd.DataFrame(), fits)
    assert not [c for ax in published.axes for c in ax.collections if c.get_gid() == "forms-spread"]


def test_qid_fit_writes_the_comparison_and_names_the_generating_form(tmp_path):
    import json

    from qid.cli import main

    synthetic("exponential").to_parquet(tmp_path / "t.parquet")
    table = ["--table", str(tmp_path / "t.parquet"), "--likelihood", "log"]  # no qid_se
    main(["fit", *table, "--out", str(tmp_path / "fits.json")])
    compare = json.loads((tmp_path / "fits.json").read_text())["compare"]
    assert compare["best"] == "exponential" and compare["lr"]["held_out"]["rmse_log"] > 0


def test_a_table_with_one_size_and_one_width_is_compared_without_error():
    table = synthetic("power")
    one = table[(table.n_params == 1e7) & (table.bits == 4)]
    compare = compare_forms(one)
    assert compare["power"]["fixed"] == {"alpha": 0.0, "gamma": 0.0}
    # The only size left out leaves nothing to fit: that fold says so, the steps fold scores.
    folds = compare["power"]["held_out"]["folds"]
    assert folds[0]["skipped"].startswith("0 rows for") and folds[1]["rmse_log"] > 0
    assert compare["best"] in FORMS


def test_lr_is_relative_to_the_peak_of_each_run_so_far():
    from qid.laws.compare import lr_relative

    table = pd.DataFrame(
        {
            "size": ["a", "a", "b", "b", "b"],
            "n_params": 1.0,
            "tokens": [2.0, 1.0, 3.0, 1.0, 2.0],
            "lr": [1.0, 2.0, 1.0, 2.0, 4.0],  # b warms up (2 -> 4), then decays
        },
        index=[10, 11, 12, 13, 14],
    )
    assert lr_relative(table).tolist() == [0.5, 1.0, 0.25, 1.0, 1.0]
    table["schedule"] = [None, None, "wsd", "wsd", "wsd"]  # a run without a schedule name is a run
    assert lr_relative(table).tolist() == [0.5, 1.0, 0.25, 1.0, 1.0]


def test_on_lr_data_eq8_absorbs_the_schedule_into_beta():
    """The confound the lr form exists for: where lr decays as D grows (cosine), Eq. (8) on
    lr-driven data overstates beta; the lr form recovers it."""
    compare = compare_forms(synthetic("lr"))
    power, lr = compare["power"]["params"]["beta"], compare["lr"]["params"]["beta"]
    assert power["ci_low"] > TRUE["lr"]["beta"] + 0.2
    assert lr["ci_low"] < TRUE["lr"]["beta"] < lr["ci_high"]


def test_simplest_counts_free_parameters_and_breaks_ties_by_held_out_error():
    from qid.laws.compare import simplest

    def fit(mse: float) -> dict:
        return {"fixed": {}, "held_out": {"mse": mse}}

    fits = {"power": fit(0.2), "exponential": fit(0.1), "lr": fit(0.05)}
    # exponential reports gP beside inv_gP, but has 4 free parameters, as power has.
    assert simplest(fits, ["power", "exponential", "lr"]) == "exponential"
    assert simplest(fits, ["power", "lr"]) == "power"
    assert simplest(fits, []) is None
