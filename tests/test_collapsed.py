"""Collapsed cells are data (issue 12, item 4): a NaN or infinite loss stays in the table with
`status` "collapsed", is left out of every fit by name, and no JSON qid writes holds a NaN or
Infinity token. Aggregate refuses a malformed, duplicated or failed record in one line that
names the files and the command that fixes them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TEXTS

from qid import QidError
from qid.aggregate import aggregate
from qid.cli import main
from qid.laws import UnifiedLaw, fit_all
from qid.report import summary
from qid.strict_json import save

LAW = UnifiedLaw(k=0.03, alpha=0.25, beta=0.5, gamma=5.0)


def strict(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as every other JSON parser does."""

    def refuse(token: str):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def record(tmp_path, method, bits, loss, nll, step=10, name=None, raw=False, **extra) -> Path:
    """An eval record as qid.evaluate writes it (raw: as Python's json.dumps would, NaN tokens
    and all, the way records were written before)."""
    rec = {
        "suite": "micro",
        "size": "h32-l1",
        "step": step,
        "tokens": step * 100,
        "n_params": 1000,
        "method": method,
        "bits": bits,
        "eval_set": "sotu",
        "loss": loss,
        "nll_sum": sum(nll),
        "model_tokens": 50,
        "reference_tokens": 40,
        "texts": len(nll),
        "reference_tokenizer": "own",
        "nll_per_text": nll,
        "seed": 0,
        "versions": {},
        **extra,
    }
    path = tmp_path / (name or f"{method}-{bits}-{step}.json")
    if raw:
        path.write_text(json.dumps(rec))
    else:
        path.write_text(json.dumps({k: _null(v) for k, v in rec.items()}))
    return path


def _null(v):
    if isinstance(v, list):
        return [_null(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


# --- the status column -----------------------------------------------------------------------


def test_a_collapsed_cell_stays_in_the_table_with_its_status(tmp_path):
    paths = [
        record(tmp_path, "base", 16, 2.0, [40.0, 40.0]),
        record(tmp_path, "rtn", 4, 2.1, [41.0, 43.0]),
        # written by qid now: the NaN loss as null, with the status saying why
        record(tmp_path, "rtn", 2, float("nan"), [float("nan"), 50.0], status="collapsed"),
        # written before: bare NaN / Infinity tokens, no status
        record(tmp_path, "gptq", 2, float("inf"), [float("inf"), 50.0], raw=True),
    ]
    table = aggregate(paths).set_index(["method", "bits"])
    assert table.status.to_dict() == {
        ("gptq", 2): "collapsed",
        ("rtn", 2): "collapsed",
        ("rtn", 4): "ok",
    }
    assert np.isnan(table.loc[("rtn", 2), "loss_q"]) and np.isinf(table.loc[("gptq", 2), "qid"])
    assert table.loc[("rtn", 4), "qid"] == pytest.approx(0.1)


def test_a_collapsed_16bit_model_collapses_its_cells_and_is_not_missing(tmp_path):
    paths = [
        record(tmp_path, "base", 16, float("nan"), [float("nan"), 40.0]),
        record(tmp_path, "rtn", 2, 2.5, [50.0, 50.0]),
    ]
    table = aggregate(paths)
    assert table.status.tolist() == ["collapsed"]


# --- the fits leave collapsed cells out, by name, in strict JSON ------------------------------


def collapsed_table() -> pd.DataFrame:
    """A law's grid of cells (as qid aggregate writes them) with two collapsed: one whose
    quantized loss is infinite (QiD inf), one whose 16-bit loss is NaN."""
    rng = np.random.default_rng(1)
    rows = [
        {
            "suite": "micro",
            "size": f"n{int(n)}",
            "step": int(d // 1e9),
            "method": "gptq",
            "bits": b,
            "eval_set": "sotu",
            "n_params": n,
            "tokens": d,
            "loss_16": 3.0,
            "qid": LAW.qid(n, d, b) * rng.lognormal(0, 0.03),
            "flag": "",
        }
        for n in (1e6, 1e7, 1e8)
        for d in (1e9, 1e10, 1e11, 1e12)
        for b in (2, 3, 4)
    ]
    table = pd.DataFrame(rows)
    table["loss_q"] = table.loss_16 + table.qid
    table["status"] = "ok"
    first, second = table.index[:2]
    table.loc[first, ["loss_q", "qid", "status"]] = [np.inf, np.inf, "collapsed"]
    table.loc[second, ["loss_16", "qid", "status"]] = [np.nan, np.nan, "collapsed"]
    return table


def test_the_fits_leave_collapsed_cells_out_and_name_them(tmp_path):
    fits = fit_all(collapsed_table(), validation=True)
    assert fits["excluded"]["collapsed"] == [
        {
            "suite": "micro",
            "size": "n1000000",
            "step": 1,
            "method": "gptq",
            "bits": 2,
            "eval_set": "sotu",
            "why": "quantized loss is inf",
        },
        {
            "suite": "micro",
            "size": "n1000000",
            "step": 1,
            "method": "gptq",
            "bits": 3,
            "eval_set": "sotu",
            "why": "16-bit loss is nan",
        },
    ]
    assert fits["unified"]["n_points"] == 34 and fits["meta"]["rows"] == 34
    text = summary(fits)
    assert "## Collapsed cells left out of the fits" in text
    assert "| micro | n1000000 | 1 | gptq | 2 | sotu | quantized loss is inf |" in text


def test_fits_json_is_strict_json_with_collapsed_cells(tmp_path, capsys):
    collapsed_table().to_parquet(tmp_path / "t.parquet")
    out = tmp_path / "fits.json"
    table = ["--table", str(tmp_path / "t.parquet"), "--likelihood", "log"]  # no qid_se
    main(["fit", *table, "--out", str(out), "--validate"])
    fits = strict(out.read_text())
    assert len(fits["excluded"]["collapsed"]) == 2
    printed = capsys.readouterr().out
    assert "excluded (collapsed): micro/n1000000/step1 gptq-2bit on sotu: quantized" in printed


def test_validation_on_a_table_without_status_holds_no_infinite_error(tmp_path):
    """`qid fit` takes any table: a QiD of inf without a `status` column (an older table) is not
    usable, so no held-out error becomes inf; a fold with nothing to measure says so."""
    table = collapsed_table().drop(columns=["status"])
    fits = fit_all(table, validation=True)
    validation = fits["validation"]
    assert all(math.isfinite(f["rmse_log"]) for f in validation["folds"])
    assert math.isfinite(validation["rmse_log"]) and math.isfinite(validation["mae_nats"])
    table.loc[table.n_params == 1e8, "qid"] = -0.01  # held out: nothing positive to measure
    fits = fit_all(table, validation=True)
    fold = fits["validation"]["folds"][2]
    assert fold["rmse_log"] is None and "no held-out QiD is positive" in fold["note"]
    strict(json.dumps(fold))
    assert "| n_params=1e+08 | 12 | – | " in summary(fits)
    assert "no held-out QiD is positive: nothing to measure the error on |" in summary(fits)


def test_diagnose_output_is_strict_json(tmp_path):
    save(tmp_path / "d.json", {"qid": float("nan"), "tokens_low": float("inf"), "ok": [1.5]})
    assert strict((tmp_path / "d.json").read_text()) == {
        "qid": None,
        "tokens_low": None,
        "ok": [1.5],
    }


def test_a_collapsed_models_eval_json_is_strict_and_says_why(collapsed_checkpoint, tmp_path):
    from qid.evaluate import run

    broken = collapsed_checkpoint
    texts = tmp_path / "sotu.parquet"
    pd.DataFrame({"text": TEXTS[:4]}).to_parquet(texts)
    out = tmp_path / "eval" / "sotu.json"
    (returned,) = run(broken, [texts], [out], context=32, batch_tokens=256, dtype="float32")
    rec = strict(out.read_text())
    assert rec["loss"] is None and rec["status"] == "collapsed"
    assert rec["reason"] == "loss is nan: 4 of 4 texts have a non-finite NLL"
    assert math.isnan(returned["loss"])  # the caller still sees the number


# --- aggregate's refusals ----------------------------------------------------------------------


def good(tmp_path) -> list[Path]:
    return [
        record(tmp_path, "base", 16, 2.0, [40.0, 40.0]),
        record(tmp_path, "rtn", 2, 2.5, [50.0, 50.0]),
    ]


def test_a_file_that_is_not_json_is_named_with_the_fix(tmp_path):
    bad = tmp_path / "garbage.json"
    bad.write_text("\x00not json")
    with pytest.raises(QidError) as err:
        aggregate([*good(tmp_path), bad])
    assert str(err.value).startswith(f"evaluation result {str(bad)!r} is not JSON (")
    assert str(err.value).endswith(f"remove and regenerate: rm -f {str(bad)!r} && snakemake")
    assert "\n" not in str(err.value)


def test_a_record_without_its_loss_is_named(tmp_path):
    bad = record(tmp_path, "rtn", 3, 2.5, [50.0, 50.0])
    rec = json.loads(bad.read_text())
    del rec["loss"], rec["eval_set"]
    bad.write_text(json.dumps(rec))
    with pytest.raises(QidError) as err:
        aggregate([*good(tmp_path), bad])
    assert str(err.value) == (
        f"evaluation result {str(bad)!r} lacks key(s) eval_set, loss: "
        f"remove and regenerate: rm -f {str(bad)!r} && snakemake"
    )


def test_every_malformed_record_is_named_at_once(tmp_path):
    array, loss = tmp_path / "array.json", record(tmp_path, "rtn", 3, "low", [1.0])
    array.write_text("[1, 2]")
    with pytest.raises(QidError) as err:
        aggregate([*good(tmp_path), array, loss])
    assert str(err.value) == (
        f"evaluation result {str(array)!r} is list, not a record; evaluation result "
        f"{str(loss)!r} has a loss that is not a number ('low'): remove and regenerate: "
        f"rm -f {str(array)!r} {str(loss)!r} && snakemake"
    )


@pytest.mark.parametrize("method,bits", [("rtn", 2), ("base", 16)])
def test_the_same_cell_twice_names_both_files(tmp_path, method, bits):
    paths = good(tmp_path)
    first = paths[0] if method == "base" else paths[1]
    copy = record(tmp_path, method, bits, 2.6, [50.0, 50.0], name="copy.json")
    with pytest.raises(QidError) as err:
        aggregate([*paths, copy])
    variant = "base" if method == "base" else f"{method}-{bits}bit"
    assert str(err.value) == (
        f"{str(first)!r} and {str(copy)!r} both hold micro/h32-l1/step10 {variant} on sotu: "
        f"remove and regenerate: rm -f {str(first)!r} {str(copy)!r} && snakemake"
    )


def failed(tmp_path, method, bits, step, error) -> Path:
    """The record a per-checkpoint job writes for a cell that failed (no loss)."""
    path = tmp_path / f"{method}-{bits}-{step}.json"
    rec = {
        "suite": "micro",
        "size": "h32-l1",
        "step": step,
        "variant": f"{method}-{bits}bit",
        "method": method,
        "bits": bits,
        "eval_set": "sotu",
        "status": "failed",
        "error": error,
    }
    path.write_text(json.dumps(rec))
    return path


def test_failed_cells_are_set_aside_and_named_in_one_error(tmp_path):
    paths = [
        *good(tmp_path),
        record(tmp_path, "rtn", 4, 2.1, [41.0, 43.0], status="ok"),
        failed(tmp_path, "gptq", 3, 8, "QidError: gptq at 3 bits: layer width 72"),
        failed(tmp_path, "awq", 2, 8, "CUDA out of memory"),
    ]
    with pytest.raises(QidError) as err:
        aggregate(paths)
    assert str(err.value) == (
        "2 cell(s) failed: micro/h32-l1/step8 gptq-3bit on sotu: QidError: gptq at 3 bits: "
        "layer width 72; micro/h32-l1/step8 awq-2bit on sotu: CUDA out of memory; their "
        "records were moved to *.failed.json, rerun snakemake to redo them"
    )
    assert not paths[3].exists() and not paths[4].exists()
    kept = tmp_path / "gptq-3-8.failed.json"
    assert json.loads(kept.read_text())["error"].startswith("QidError: gptq at 3 bits")
    assert (tmp_path / "awq-2-8.failed.json").is_file()
    assert all(p.exists() for p in paths[:3])  # the finished cells are kept
    assert len(aggregate(paths[:3])) == 2  # and aggregate once the failed cells are redone
