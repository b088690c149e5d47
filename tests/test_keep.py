"""A failure keeps finished work (issue 12): a checkpoint's job writes a failing cell as failed
records and keeps the others; a rerun redoes only what failed or changed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TEXTS
from conftest import snakemake as run_snakemake

from qid import grid
from qid.cells import Job, run_cells
from qid.cli import main

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "micro" / "config.yaml"
CKPT = grid.Checkpoint("t", "h64-l2", 10)
CELLS = [("bnb_nf4", 4), ("rtn", 2), ("rtn", 3)]
FAILED_KEYS = {"suite", "size", "step", "variant", "method", "bits", "eval_set", "status"}


def make_job(checkpoint: Path, texts: Path, **changes) -> Job:
    fields = {
        "checkpoint": CKPT,
        "path": checkpoint,
        "cells": CELLS,
        "options": {"rtn": {"group_size": 32}, "bnb_nf4": {}},
        "calibration": None,
        "texts": [texts],
        "evaluation": {"context": 32, "batch_tokens": 2048, "dtype": "auto"},
        "keep_models": False,
    }
    return Job(**{**fields, **changes})


def record(variant: str) -> dict:
    return json.loads(Path(CKPT.eval_path(variant, "heldout")).read_text())


def mtimes() -> dict[str, int]:
    return {
        v: Path(CKPT.eval_path(v, "heldout")).stat().st_mtime_ns
        for v in [grid.BASE, *(grid.variant(m, b) for m, b in CELLS)]
    }


@pytest.fixture
def texts(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "heldout.parquet"
    pd.DataFrame({"text": TEXTS[:8]}).to_parquet(path)
    return path


def fail_rtn_3bit(monkeypatch) -> None:
    """rtn's backend raises for 3 bits, as a cell that breaks at run time."""
    from qid.quantize import rtn

    quantize = rtn.quantize

    def broken(checkpoint, out, bits, options, calibration=None):
        if bits == 3:
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
        return quantize(checkpoint, out, bits, options, calibration)

    monkeypatch.setattr(rtn, "quantize", broken)


def test_a_failing_cell_is_recorded_and_the_others_are_kept(
    tiny_checkpoint, texts, monkeypatch, capsys
):
    fail_rtn_3bit(monkeypatch)
    failures = run_cells(make_job(tiny_checkpoint, texts))
    assert [(f.variant, f.error) for f in failures] == [
        ("rtn-3bit", "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB")
    ]
    failed = record("rtn-3bit")
    assert FAILED_KEYS | {"error", "settings"} == set(failed)
    assert (failed["status"], failed["method"], failed["bits"]) == ("failed", "rtn", 3)
    assert failed["error"] == failures[0].error
    for variant in (grid.BASE, "bnb_nf4-4bit", "rtn-2bit"):
        assert record(variant)["status"] == "ok" and record(variant)["loss"] > 0
    err = capsys.readouterr()
    assert "Traceback" in err.err and "rtn-3bit: failed: RuntimeError" in err.out
    assert err.err.strip().splitlines()[-1] == (
        f"qid cells: t/h64-l2/step10/rtn-3bit failed: {failures[0].error}"
    )
    assert not Path(grid.Cell(CKPT, "rtn", 2).quantized).exists()  # dropped once evaluated


def test_a_rerun_redoes_only_the_failed_cell_and_what_changed(
    tiny_checkpoint, texts, monkeypatch, capsys
):
    with monkeypatch.context() as m:
        fail_rtn_3bit(m)
        run_cells(make_job(tiny_checkpoint, texts))
    before = mtimes()
    assert run_cells(make_job(tiny_checkpoint, texts)) == []
    after = mtimes()
    assert {v for v in before if before[v] != after[v]} == {"rtn-3bit"}
    assert record("rtn-3bit")["status"] == "ok"
    out = capsys.readouterr().out
    assert "kept base\nkept bnb_nf4-4bit\nkept rtn-2bit\n" in out
    # A changed setting is never reused: rtn's options redo the rtn cells only, the
    # evaluation settings redo everything.
    options = {"rtn": {"group_size": 16}, "bnb_nf4": {}}
    run_cells(make_job(tiny_checkpoint, texts, options=options))
    changed = mtimes()
    assert {v for v in after if after[v] != changed[v]} == {"rtn-2bit", "rtn-3bit"}
    evaluation = {"context": 16, "batch_tokens": 2048, "dtype": "auto"}
    run_cells(make_job(tiny_checkpoint, texts, options=options, evaluation=evaluation))
    assert all(changed[v] != t for v, t in mtimes().items())
    assert record(grid.BASE)["context"] == 16


def test_a_changed_text_or_a_record_without_settings_is_recomputed(tiny_checkpoint, texts):
    one = {"cells": [("rtn", 2)]}
    path = Path(CKPT.eval_path("rtn-2bit", "heldout"))
    run_cells(make_job(tiny_checkpoint, texts, **one))
    stamp = path.stat().st_mtime_ns
    pd.DataFrame({"text": TEXTS[8:16]}).to_parquet(texts)
    run_cells(make_job(tiny_checkpoint, texts, **one))
    assert path.stat().st_mtime_ns != stamp
    # A record made before `settings` existed (or by hand) is not trusted.
    legacy = {k: v for k, v in record("rtn-2bit").items() if k not in ("settings", "status")}
    path.write_text(json.dumps(legacy))
    stamp = path.stat().st_mtime_ns
    run_cells(make_job(tiny_checkpoint, texts, **one))
    assert path.stat().st_mtime_ns != stamp and record("rtn-2bit")["status"] == "ok"


def test_cells_exits_zero_and_names_the_failed_cell(tiny_checkpoint, texts, monkeypatch, capsys):
    fail_rtn_3bit(monkeypatch)
    options = {"rtn": {"group_size": 32}}
    main(
        [
            "cells",
            *("--suite", "t", "--size", "h64-l2", "--step", "10"),
            *("--checkpoint", str(tiny_checkpoint), "--cells", "rtn:2,rtn:3"),
            *("--options", json.dumps(options), "--texts", str(texts), "--context", "32"),
            "--drop-quantized",
        ]
    )
    assert "qid cells: t/h64-l2/step10/rtn-3bit failed: RuntimeError" in capsys.readouterr().err
    assert record("rtn-2bit")["status"] == "ok"


# End to end: a tiny per-checkpoint study whose GPTQ cell fails at run time.


def test_a_collapsed_model_is_a_result_written_as_strict_json_and_kept(
    collapsed_checkpoint, texts, capsys
):
    job = make_job(collapsed_checkpoint, texts, cells=[("rtn", 2)])
    assert run_cells(job) == []

    def no_constant(token):
        raise ValueError(f"{token} in an eval JSON")

    for variant in (grid.BASE, "rtn-2bit"):
        path = Path(CKPT.eval_path(variant, "heldout"))
        rec = json.loads(path.read_text(), parse_constant=no_constant)
        assert (rec["status"], rec["loss"]) == ("collapsed", None)
    before = mtimes_of([grid.BASE, "rtn-2bit"])
    run_cells(job)
    assert mtimes_of([grid.BASE, "rtn-2bit"]) == before
    assert "kept base\nkept rtn-2bit\n" in capsys.readouterr().out


def mtimes_of(variants: list[str]) -> dict[str, int]:
    return {v: Path(CKPT.eval_path(v, "heldout")).stat().st_mtime_ns for v in variants}


def tiny_study(tmp_path: Path, calibration_length: int) -> Path:
    config = yaml.safe_load(MICRO.read_text())
    config["suites"]["micro"]["sizes"] = {"h32-l1": config["suites"]["micro"]["sizes"]["h32-l1"]}
    config["suites"]["micro"]["steps"] = [8]
    config["eval_sets"] = {"sotu": config["eval_sets"]["sotu"]}
    config["methods"] = {"rtn": {"bits": [2], "group_size": 32}, "gptq": config["methods"]["gptq"]}
    config.pop("bitnet")
    # Calibration rows of 8 tokens: GPTQ keeps only rows longer than 10 tokens, so its cell
    # fails at run time, after the dry run accepted it.
    config["data"]["calibration"]["length"] = calibration_length
    path = tmp_path / f"tiny{calibration_length}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


EVALS = [
    f"results/micro/eval/h32-l1/step8/{v}/sotu.json" for v in ("base", "rtn-2bit", "gptq-2bit")
]
LOG = "logs/micro/quantize/h32-l1/step8.log"


@pytest.mark.slow
def test_a_failing_cell_keeps_the_checkpoints_other_cells(tmp_path):
    workdir = tmp_path / "study"
    run = run_snakemake(workdir, *EVALS, configfile=tiny_study(tmp_path, 8))
    assert run.returncode == 0, run.stderr[-3000:]
    base, rtn, gptq = (json.loads((workdir / p).read_text()) for p in EVALS)
    assert (base["status"], rtn["status"], gptq["status"]) == ("ok", "ok", "failed")
    assert "calibration texts is longer than" in gptq["error"]
    assert "qid cells: micro/h32-l1/step8/gptq-2bit failed: " in (workdir / LOG).read_text()
    kept = {p: (workdir / p).read_bytes() for p in EVALS[:2]}
    # Aggregate moves a failed record aside (<stem>.failed.json): the cell's result is missing,
    # and the next run redoes only it.
    (workdir / EVALS[2]).rename(workdir / EVALS[2].replace(".json", ".failed.json"))
    dry = run_snakemake(workdir, "-n", *EVALS, configfile=tiny_study(tmp_path, 8))
    assert re.search(r"^checkpoint_micro\s+1$", dry.stdout, re.M), dry.stdout
    assert re.search(r"^total\s+1$", dry.stdout, re.M), dry.stdout
    # The fix (calibration rows long enough) reruns the job: it keeps base and rtn, redoes gptq.
    run = run_snakemake(workdir, *EVALS, configfile=tiny_study(tmp_path, 64))
    assert run.returncode == 0, run.stderr[-3000:]
    log = (workdir / LOG).read_text()
    assert "kept base" in log and "kept rtn-2bit" in log and "kept gptq-2bit" not in log
    assert json.loads((workdir / EVALS[2]).read_text())["status"] == "ok"
    assert {p: (workdir / p).read_bytes() for p in EVALS[:2]} == kept
