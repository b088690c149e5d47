"""The whole workflow, end to end, on the micro config (tests/micro/config.yaml): real Snakemake,
real training, quantization, evaluation, fits, figures and report, in a temporary directory."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import snakemake as run_snakemake

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "micro" / "config.yaml"
CONFIG = yaml.safe_load(MICRO.read_text())
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, configfile: Path = MICRO) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, *args, configfile=configfile)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    run = snakemake(workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir


def n_cells() -> int:
    suite = CONFIG["suites"]["micro"]
    per_ckpt = sum(len(m["bits"]) for m in CONFIG["methods"].values())
    return len(suite["sizes"]) * len(suite["steps"]) * per_ckpt * len(CONFIG["eval_sets"])


def test_the_study_produces_table_fits_and_figures(study):
    table = pd.read_parquet(study / "results" / "qid.parquet")
    assert len(table) == n_cells()
    for column in [
        "suite",
        "size",
        "step",
        "tokens",
        "n_params",
        "method",
        "bits",
        "eval_set",
        "loss_16",
        "loss_q",
        "qid",
        "config_hash",
        "seed",
        "versions",
    ]:
        assert column in table.columns, column
    assert (table.qid == table.loss_q - table.loss_16).all()
    assert (table.tokens == table.step * 64 * 8).all()  # context x batch tokens per step
    assert table.n_params.nunique() == 2 and (table.n_params > 0).all()
    # 2-bit RTN must cost more than 4-bit on average: the study measures something.
    by_bits = table[table.method == "rtn"].groupby("bits").qid.mean()
    assert by_bits[2] > by_bits[4]

    fits = json.loads((study / "results" / "fits.json").read_text())
    for law in ("unified", "tokens", "size", "bits"):
        assert {"n_points", "n_excluded"} <= set(fits[law])
    assert set(fits["unified"]["params"]) == {"k", "alpha", "beta", "gamma"}
    assert set(fits["unified"]["params"]["beta"]) == {"value", "stderr", "ci_low", "ci_high"}
    assert fits["unified"]["bootstrap"]["n"] == 1000 and "validation" in fits
    # The rival forms (laws.compare): lr is skipped until trained suites record their lr.
    assert {"power", "exponential", "lr", "best", "comparable"} <= set(fits["compare"])
    assert fits["compare"]["best"] in ("power", "exponential", "lr")
    summary = (study / "results" / "summary.md").read_text()
    assert "this study beside the paper" in summary and "Rival forms side by side" in summary
    table1 = pd.read_csv(study / "results" / "table1_published.csv")
    assert len(table1) == 4 * 4 * 3  # models x QiD levels x bit widths
    for name in ("fig2_qid_vs_tokens", "fig6_unified_law"):
        for ext in ("png", "pdf"):
            assert (study / "results" / "figures" / f"{name}.{ext}").stat().st_size > 1000


def test_the_bitnet_twins_and_the_weight_changes(study):
    import matplotlib.pyplot as plt

    suite = CONFIG["suites"]["micro"]
    bitnet = pd.read_csv(study / "results" / "bitnet.csv")
    assert len(bitnet) == len(CONFIG["bitnet"]["sizes"]) * len(CONFIG["eval_sets"])
    assert (bitnet.step == suite["steps"][-1]).all()
    for column in ("loss_bitnet", "loss_16", "loss_rtn_2bit", "loss_gptq_2bit"):
        assert bitnet[column].notna().all(), column
    assert np.allclose(bitnet.gap_16, bitnet.loss_bitnet - bitnet.loss_16)
    assert "BitNet b1.58" in (study / "results" / "bitnet.md").read_text()
    for size in CONFIG["bitnet"]["sizes"]:  # the twins saw the same tokens at the same steps
        twin = pd.read_parquet(study / f"results/micro/train/{size}.parquet")
        log = pd.read_parquet(study / f"results/micro/bitnet/train/{size}.parquet")
        assert log.bitnet.all() and log.tokens.equals(twin.tokens)
        assert log.lr.max() == CONFIG["bitnet"]["training"]["lr"]
    changes = pd.read_parquet(study / "results" / "micro" / "weights" / "changes.parquet")
    assert len(changes) == len(suite["sizes"]) * (len(suite["steps"]) - 1) * 4
    assert (changes.mean_abs_change > 0).all()
    for name in ("fig12_weight_change", "fig14_bitnet"):  # drawn, not placeholders (~285 px)
        assert plt.imread(study / "results" / "figures" / f"{name}.png").shape[0] > 500, name


def test_the_report_holds_the_figures(study):
    run = snakemake(study, "--report", "results/report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    html = (study / "results" / "report.html").read_text(errors="replace")
    assert "fig6_unified_law" in html and "Eq. (8)" in html
    assert "fig12_weight_change" in html and "fig14_bitnet" in html and "bitnet.csv" in html
    assert "forms_compare" in html


# Rules that read no evaluation: a change to the evaluation settings must not rerun them.
UPSTREAM = {"corpus", "eval_set", "calibration", "train", "train_bitnet", "weights"}


def scheduled(workdir: Path, config: dict, tmp_path: Path) -> dict[str, int]:
    """Jobs per rule that `snakemake -n` schedules in `workdir` for `config` ({}: none)."""
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    dry = snakemake(workdir, "-n", configfile=configfile)
    assert dry.returncode == 0, dry.stderr[-2000:]
    if "Nothing to be done" in dry.stdout:
        return {}
    stats = re.search(r"Job stats:\n(.*?)\n\n", dry.stdout, re.S).group(1)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, re.M))
    return {rule: int(n) for rule, n in jobs.items() if rule != "total"}


def micro(per_job: str, **evaluate) -> dict:
    """The micro config cut into jobs by `per_job`, with `evaluate` settings over its own."""
    config = yaml.safe_load(MICRO.read_text())
    config["execution"]["per_job"] = per_job
    config["evaluate"].update(evaluate)
    return config


def reversed_keys(obj):
    """The same config with every mapping's keys in reverse order (lists kept as they are)."""
    if isinstance(obj, dict):
        return {k: reversed_keys(obj[k]) for k in reversed(list(obj))}
    return obj


def touched(study: Path, workdir: Path, per_job: str) -> Path:
    """The study's results in `workdir` as if the `per_job` cut had made them: `--touch` records
    those jobs' params without running them (the quantized models are temp: gone, and no job
    reads them)."""
    shutil.copytree(study / "results", workdir / "results")
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(micro(per_job), sort_keys=False))
    touch = snakemake(workdir, "--touch", "--forceall", configfile=configfile)
    assert touch.returncode == 0, touch.stderr[-2000:]
    return workdir


@pytest.fixture(scope="module")
def per_cell(study, tmp_path_factory) -> Path:
    return touched(study, tmp_path_factory.mktemp("per_cell"), "cell")


@pytest.fixture(scope="module")
def per_size(study, tmp_path_factory) -> Path:
    return touched(study, tmp_path_factory.mktemp("per_size"), "size")


WORKDIRS = {"checkpoint": "study", "cell": "per_cell", "size": "per_size"}


def evaluation_jobs(per_job: str) -> dict[str, int]:
    """The jobs that evaluate the grid's models, per rule, in each cut."""
    suite = CONFIG["suites"]["micro"]
    n_ckpt = len(suite["sizes"]) * len(suite["steps"])
    if per_job == "size":
        return {"size_micro": len(suite["sizes"])}
    if per_job == "checkpoint":
        return {"checkpoint_micro": n_ckpt}
    per_ckpt = sum(len(m["bits"]) for m in CONFIG["methods"].values())
    return {"evaluate_base": n_ckpt, "quantize": n_ckpt * per_ckpt}


def test_the_results_say_how_they_were_evaluated(study):
    record = json.loads((study / "results/micro/eval/h32-l1/step8/rtn-2bit/sotu.json").read_text())
    assert record["context"] == CONFIG["evaluate"]["context"]
    assert record["batch_tokens"] == CONFIG["evaluate"]["batch_tokens"]
    assert (record["dtype"], record["fake_quant"], record["reference_tokenizer"]) == (
        "float32",
        False,
        "own",
    )
    table = pd.read_parquet(study / "results" / "qid.parquet")
    assert (table.context == CONFIG["evaluate"]["context"]).all()


def test_every_json_the_study_writes_is_strict(study):
    # No NaN or Infinity token (not JSON) in any result: non-finite numbers are written as null.
    from test_collapsed import strict

    written = sorted((study / "results").rglob("*.json"))
    assert any(p.name == "fits.json" for p in written)
    assert any("/eval/" in str(p) for p in written)
    for path in written:
        strict(path.read_text())
    table = pd.read_parquet(study / "results" / "qid.parquet")
    assert set(table.status) == {"ok"}


@pytest.mark.parametrize("per_job", list(WORKDIRS))
def test_the_config_in_another_key_order_reruns_nothing(request, per_job, tmp_path):
    workdir = request.getfixturevalue(WORKDIRS[per_job])
    assert scheduled(workdir, micro(per_job), tmp_path) == {}  # up to date: what follows counts
    assert scheduled(workdir, reversed_keys(micro(per_job)), tmp_path) == {}


@pytest.mark.parametrize("per_job", list(WORKDIRS))
@pytest.mark.parametrize(
    "setting",
    [{"context": 32}, {"batch_tokens": 1024}, {"dtype": "bfloat16"}, {"fake_quant": True}],
    ids=lambda s: next(iter(s)),
)
def test_an_evaluation_setting_reruns_the_evaluations_and_no_training(
    request, per_job, setting, tmp_path
):
    workdir = request.getfixturevalue(WORKDIRS[per_job])
    jobs = scheduled(workdir, micro(per_job, **setting), tmp_path)
    for rule, n in evaluation_jobs(per_job).items():
        assert jobs.get(rule) == n, (rule, jobs)
    assert jobs.get("evaluate_bitnet") == len(CONFIG["bitnet"]["sizes"]), jobs
    assert jobs.get("aggregate") == 1, jobs
    assert not UPSTREAM & set(jobs), jobs


@pytest.mark.parametrize(
    ("per_job", "rule"),
    [("checkpoint", "checkpoint_micro"), ("cell", "quantize"), ("size", "size_micro")],
)
def test_the_default_target_notices_a_missing_result(request, per_job, rule, tmp_path):
    # Snakemake reruns no job for a missing file whose consumer (aggregate) looks up to date:
    # the default target asks for every result itself.
    workdir = request.getfixturevalue(WORKDIRS[per_job])
    result = workdir / "results/micro/eval/h32-l1/step8/rtn-3bit/sotu.json"
    saved = tmp_path / "saved.json"
    shutil.copy2(result, saved)
    result.unlink()
    try:
        jobs = scheduled(workdir, micro(per_job), tmp_path)
    finally:
        shutil.copy2(saved, result)  # as it was, mtime included: the study stays up to date
    assert jobs.get(rule) == 1 and jobs.get("aggregate") == 1, jobs
    assert not UPSTREAM & set(jobs), jobs
    assert not {"evaluate_base", "checkpoint_micro", "quantize"} - {rule} & set(jobs), jobs


def test_a_size_job_gives_the_checkpoint_jobs_results(per_size, tmp_path):
    # The size's job run for real (its eval records gone, so `qid cells` recomputes each one):
    # every step's losses are those the study's checkpoint jobs wrote.
    workdir = tmp_path / "per_size"
    shutil.copytree(per_size, workdir, symlinks=True)  # per_size stays up to date for the rest
    evals = sorted((workdir / "results/micro/eval/h32-l1").glob("step*/*/*.json"))
    before = {p: json.loads(p.read_text())["nll_per_text"] for p in evals}
    assert len({p.parts[-3] for p in evals}) == len(CONFIG["suites"]["micro"]["steps"])
    for path in evals:
        path.unlink()
    run = snakemake(
        workdir,
        "results/micro/eval/h32-l1/step8/base/sotu.json",
        configfile=workdir / "config.yaml",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "size_micro" in run.stdout + run.stderr
    assert {p: json.loads(p.read_text())["nll_per_text"] for p in evals} == before


def test_one_cell_reruns_with_its_checkpoint_only(study):
    # The micro config runs one job per checkpoint (execution.per_job): asking for a cell's
    # output reruns that checkpoint's job and nothing else.
    cell = "results/micro/eval/h32-l1/step24/gptq-2bit/sotu.json"
    other = study / "results/micro/eval/h64-l2/step24/gptq-2bit/sotu.json"
    before = other.stat().st_mtime_ns
    (study / cell).unlink()
    dry = snakemake(study, "-n", cell)
    assert dry.returncode == 0, dry.stderr[-2000:]
    stats = re.search(r"Job stats:\n(.*?)\n\n", dry.stdout, re.S).group(1)
    assert re.search(r"^checkpoint_micro\s+1$", stats, re.M)
    assert re.search(r"^total\s+1$", stats, re.M)
    run = snakemake(study, cell)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads((study / cell).read_text())["variant"] == "gptq-2bit"
    assert other.stat().st_mtime_ns == before


def test_a_cell_of_an_unknown_method_is_named(study):
    run = snakemake(study, "-n", "results/micro/eval/h32-l1/step24/hqq-4bit/sotu.json")
    assert run.returncode != 0
    assert "unknown quantization method 'hqq'" in run.stdout + run.stderr


def test_a_configfile_replaces_the_default_config(tmp_path):
    # The workflow's own config/config.yaml is present (as in a checkout), yet only the given
    # config's suite is scheduled: Snakemake would merge the two by default.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    dry = snakemake(tmp_path, "-n")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "suite=micro" in dry.stdout and "neox-sotu" not in dry.stdout


def test_bad_config_fails_before_any_job(tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["methods"]["rtn"]["bits"] = [1, 2]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "-n", configfile=bad)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "config error: config key 'methods.rtn.bits': method 'rtn' does not support 1-bit" in out
    assert not (tmp_path / "results").exists()
