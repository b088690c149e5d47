"""The learning rate as data (issue 13): cosine, WSD and constant schedules; the rate at each
checkpoint recorded by training and by fetching a suite whose schedule is published, carried to
the QiD table's `lr` and `schedule` columns; the schedules study's config and figure."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from qid.config import ConfigError, check_config, load
from qid.schedule import decay_start, lr_at

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_cosine_is_gpt_neox_warmup_then_half_cosine_to_the_floor():
    peak, warmup, total, floor = 1e-3, 10, 110, 0.1
    assert lr_at(5, peak, warmup, total, floor) == pytest.approx(peak / 2)
    assert lr_at(warmup, peak, warmup, total, floor) == pytest.approx(peak)
    assert lr_at(60, peak, warmup, total, floor) == pytest.approx(peak * (1 + floor) / 2)
    assert lr_at(total, peak, warmup, total, floor) == pytest.approx(peak * floor)
    assert decay_start("cosine", warmup, total) == warmup


def test_wsd_holds_the_peak_until_the_last_fraction_then_decays_linearly_to_the_floor():
    peak, warmup, total, floor, fraction = 2e-3, 20, 240, 0.1, 0.25
    start = decay_start("wsd", warmup, total, fraction)
    assert start == total - 60
    lrs = np.array([lr_at(s, peak, warmup, total, floor, "wsd", fraction) for s in range(1, 241)])
    assert lrs[warmup - 1 : start] == pytest.approx(peak)  # steps warmup..start
    decay = lrs[start:]
    assert (np.diff(decay) < 0).all() and decay[-1] == pytest.approx(peak * floor)
    assert np.diff(decay) == pytest.approx(np.diff(decay)[0])  # linear
    with pytest.raises(ValueError, match="decay_fraction"):
        decay_start("wsd", warmup, total)


def test_constant_holds_the_peak_after_warmup_and_never_decays():
    assert lr_at(5, 1e-3, 10, 100, 0.1, "constant") == pytest.approx(5e-4)
    assert lr_at(100, 1e-3, 10, 100, 0.1, "constant") == 1e-3
    assert decay_start("constant", 10, 100) is None
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        lr_at(50, 1e-3, 10, 100, 0.1, "linear")


def _train(tmp_path: Path, tokenizer, **schedule):
    """A 12-step run of a tiny model (two checkpoints), returning its log and out dir."""
    from qid.checkpoints import train

    tmp_path.mkdir(parents=True, exist_ok=True)
    ids = np.array(tokenizer(" ".join(["the union is strong"] * 400))["input_ids"], np.int32)
    np.save(tmp_path / "ids.npy", ids)
    tokenizer.save_pretrained(tmp_path / "tok")
    training = {
        "context": 16,
        "batch_size": 2,
        "lr": 2e-3,
        "warmup_steps": 3,
        "min_lr_ratio": 0.1,
        "weight_decay": 0.1,
        "betas": [0.9, 0.95],
        **schedule,
    }
    arch = {"hidden_size": 32, "num_layers": 1, "num_heads": 2}
    out = tmp_path / "out"
    log = train(
        "s", "h32", arch, training, [6, 12], 0, tmp_path / "ids.npy", tmp_path / "tok", out,
        tmp_path / "log.parquet",
    )  # fmt: skip
    return log, out


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_training_records_the_rate_at_each_checkpoint(tmp_path, tokenizer):
    log, out = _train(tmp_path, tokenizer, schedule="wsd", decay_fraction=0.25)
    for step in (6, 12):
        meta = json.loads((out / f"step{step}" / "qid_checkpoint.json").read_text())
        assert meta["schedule"] == "wsd" and meta["decay_step"] == 9
        assert meta["lr"] == log.set_index("step").lr[step]  # the rate of the step it saved
    assert log.lr[log.step.between(3, 9)].eq(2e-3).all() and log.lr.iloc[-1] < 2e-3


def test_an_unnamed_schedule_trains_exactly_as_cosine(tmp_path, tokenizer):
    """Configs written before the key trained under cosine: the same weights, bit for bit."""
    _, plain = _train(tmp_path / "a", tokenizer)
    _, cosine = _train(tmp_path / "b", tokenizer, schedule="cosine")
    _, wsd = _train(tmp_path / "c", tokenizer, schedule="wsd", decay_fraction=0.25)
    assert _digest(plain / "step12") == _digest(cosine / "step12") != _digest(wsd / "step12")


def test_a_pythia_revision_records_its_published_rate():
    from qid.fetch import checkpoint_meta

    pythia = load(ROOT / "config" / "pythia.yaml")["suites"]["pythia"]
    meta = checkpoint_meta(pythia, "pythia", "160m", 98000)
    # EleutherAI/pythia models/160M/pythia-160m.yml: peak 6e-4, warmup 1430, cosine to 6e-5
    progress = (98000 - 1430) / (143000 - 1430)
    expected = 6e-5 + (6e-4 - 6e-5) * 0.5 * (1 + math.cos(math.pi * progress))
    assert meta["lr"] == pytest.approx(expected)
    assert meta["schedule"] == "cosine" and meta["decay_step"] == 1430
    big = checkpoint_meta(pythia, "pythia", "12b", 98000)["lr"]
    assert big == pytest.approx(expected * 1.2e-4 / 6e-4)  # the same shape, 12b's peak
    unpublished = {k: v for k, v in pythia.items() if k != "lr_schedule"}
    assert "lr" not in checkpoint_meta(unpublished, "pythia", "160m", 98000)


PUBLISHED = {"schedule": "cosine", "warmup_steps": 1, "total_steps": 9, "min_lr_ratio": 0.1}


def _suite(edit):
    config = copy.deepcopy(DEFAULT)
    edit(config["suites"]["neox-sotu"])
    return config


def _published(suite):
    suite.update(source="hub", repo="a/{size}", tokens_per_step=8)
    suite.pop("training")
    suite["lr_schedule"] = PUBLISHED


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["training"].update(schedule="wsd"), r"training.decay_fraction' goes with"),
        (lambda s: s["training"].update(decay_fraction=0.2), r"wsd only \(here cosine\)"),
        (
            lambda s: s["training"].update(schedule="wsd", decay_fraction=0.95),
            r"training.decay_fraction' \(0.95\): the decay would start inside the 20 warmup",
        ),
        (
            lambda s: s.update(lr_schedule={**PUBLISHED, "lr": 1e-3}),
            r"'suites.neox-sotu.lr_schedule' is for hub/local",
        ),
        (_published, r"'suites.neox-sotu.lr_schedule.lr' \(or sizes.<size>.lr"),
        (lambda s: s["training"].update(schedule="linear"), r"training.schedule"),
    ],
)
def test_a_bad_schedule_is_named(edit, message):
    with pytest.raises(ConfigError, match=message):
        check_config(_suite(edit))


def test_the_schedules_study_trains_one_suite_twice_with_checkpoints_in_both_phases():
    config = load(ROOT / "config" / "schedules.yaml")
    suites = {s["training"].get("schedule", "cosine"): s for s in config["suites"].values()}
    assert set(suites) == {"cosine", "wsd"}
    cosine, wsd = suites["cosine"], suites["wsd"]
    embedded = DEFAULT["suites"]["neox-sotu"]
    assert cosine["sizes"] == wsd["sizes"] == embedded["sizes"]
    assert cosine["steps"] == wsd["steps"]  # QiD at matched D
    for key in ("lr", "context", "batch_size", "warmup_steps", "min_lr_ratio"):
        assert cosine["training"][key] == wsd["training"][key] == embedded["training"][key]
    t = wsd["training"]
    onset = decay_start("wsd", t["warmup_steps"], wsd["steps"][-1], t["decay_fraction"])
    stable = [s for s in wsd["steps"] if t["warmup_steps"] < s <= onset]
    assert len(stable) >= 2 and len([s for s in wsd["steps"] if s > onset]) >= 2


def _records(tmp_path: Path, schedule: dict) -> list[Path]:
    paths = []
    for method, bits, loss in (("base", 16, 2.0), ("rtn", 2, 2.5)):
        record = {
            "suite": "s", "size": "a", "step": 10, "tokens": 1000, "n_params": 1000,
            "method": method, "bits": bits, "eval_set": "sotu", "loss": loss,
            "nll_sum": 80 * loss, "model_tokens": 50, "reference_tokens": 40, "texts": 2,
            "reference_tokenizer": "own", "nll_per_text": [40 * loss, 40 * loss], "seed": 0,
            "versions": {}, **(schedule if method == "base" else {}),
        }  # fmt: skip
        paths.append(tmp_path / f"{method}.json")
        paths[-1].write_text(json.dumps(record))
    return paths


def test_the_table_carries_the_checkpoints_rate_and_schedule(tmp_path):
    from qid.aggregate import aggregate

    known = {"lr": 1.5e-3, "schedule": "wsd", "decay_step": 8}
    table = aggregate(_records(tmp_path, known))
    assert table.loc[0, ["lr", "schedule", "decay_step"]].tolist() == [1.5e-3, "wsd", 8.0]
    old = aggregate(_records(tmp_path, {}))  # records from before the rate was recorded
    assert np.isnan(old.lr[0]) and old.schedule[0] == "" and np.isnan(old.decay_step[0])


def _two_schedules() -> pd.DataFrame:
    rows = []
    for schedule, onset in (("cosine", 20), ("wsd", 180)):
        for n, size in ((1e5, "h64"), (8e5, "h128")):
            for step in (40, 98, 180, 240):
                lr = lr_at(step, 2e-3, 20, 240, 0.1, schedule, 0.25 if schedule == "wsd" else None)
                for bits in (2, 4):
                    rows.append(
                        {"suite": f"neox-{schedule}", "size": size, "step": step,
                         "tokens": step * 4096, "n_params": n, "method": "rtn", "bits": bits,
                         "eval_set": "sotu", "qid": 0.01 * step / 240 / bits, "qid_se": 1e-4,
                         "lr": lr, "schedule": schedule, "decay_step": float(onset)}
                    )  # fmt: skip
    return pd.DataFrame(rows)


def test_the_figure_marks_each_schedules_decay_onset_and_needs_two_schedules():
    import matplotlib.pyplot as plt

    from qid.figures import load as load_figure

    draw = load_figure("lr_schedule")
    fits = {"meta": {"method": "rtn", "eval_set": "sotu"}}
    fig = draw(_two_schedules(), fits)
    top = fig.axes[0]
    onsets = sorted({line.get_xdata()[0] for line in top.lines if line.get_xdata()[0] in
                     (20 * 4096, 180 * 4096)})  # fmt: skip
    assert onsets == [20 * 4096, 180 * 4096]
    assert len(fig.axes) == 4 and {t.get_text() for t in top.texts} >= {"wsd decays"}
    plt.close(fig)
    one = _two_schedules().query("schedule == 'cosine'")
    fig = draw(one, fits)
    text = " ".join(t.get_text() for t in fig.texts + fig.axes[0].texts)
    assert "at least 2 learning-rate schedules" in " ".join(text.split())
    assert "1 (cosine)" in " ".join(text.split())
    plt.close(fig)
    fig = draw(one.drop(columns=["lr", "schedule", "decay_step"]), fits)  # an older table
    assert "holds none" in " ".join(" ".join(t.get_text() for t in fig.axes[0].texts).split())
    plt.close(fig)


def test_the_rate_in_a_checkpoints_meta_reaches_its_eval_record(tiny_checkpoint, tmp_path):
    import shutil

    from conftest import TEXTS

    from qid.evaluate import run

    checkpoint = tmp_path / "step10"
    shutil.copytree(tiny_checkpoint, checkpoint)
    meta = json.loads((checkpoint / "qid_checkpoint.json").read_text())
    known = {"lr": 7.5e-4, "schedule": "wsd", "decay_step": 9}
    (checkpoint / "qid_checkpoint.json").write_text(json.dumps({**meta, **known}))
    texts = tmp_path / "sotu.parquet"
    pd.DataFrame({"text_id": range(4), "text": TEXTS[:4]}).to_parquet(texts)
    (record,) = run(checkpoint, [texts], [tmp_path / "base.json"], context=32, batch_tokens=256)
    assert {k: record[k] for k in known} == known


def test_qid_at_matched_tokens_pairs_the_schedules_with_their_errors():
    from qid.schedule import matched_tokens

    table = _two_schedules()
    table.loc[table.schedule == "wsd", "qid"] += 0.001  # WSD's QiD above cosine's everywhere
    table.loc[table.schedule == "wsd", "qid_se"] = 3e-4
    pairs = matched_tokens(table.drop(index=0), method="rtn", eval_set="sotu")
    assert len(pairs) == len(table) // 2 - 1  # the cell only cosine has is left out
    assert pairs["diff"].to_numpy() == pytest.approx(0.001)
    assert pairs.diff_se.to_numpy() == pytest.approx((1e-4**2 + 3e-4**2) ** 0.5)
    late = pairs[pairs.step == 240].iloc[0]
    assert late.lr_cosine == pytest.approx(late.lr_wsd) and late.qid_wsd > late.qid_cosine
