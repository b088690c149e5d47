"""The micro study through `--profile profiles/slurm` on a real one-node SLURM with a fake GPU.

Run by tests/slurm/run.sh, which starts the cluster and sets QID_SLURM=1; skipped otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "tests" / "micro" / "config.yaml"
# On the cluster the micro grid runs one job per cell, a checkpoint's jobs grouped into one SLURM
# job (`execution.group`); the local run it is compared with runs one job per checkpoint.
PER_CELL = ROOT / "tests" / "slurm" / "per_cell.yaml"
GPU_RULES = {"train", "quantize", "evaluate_base", "train_bitnet", "evaluate_bitnet"}


def asks_for_a_gpu(name: str) -> bool:
    """A rule, or a group job (`checkpoint_<its rules>`), that must ask SLURM for a GPU."""
    return name in GPU_RULES or name.startswith("checkpoint")


# The CI overlay: where this cluster differs from a real one (no accounting database, so no
# sacct and no accounts) and a test's impatience (fast status checks, no retries).
OVERLAY = [
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-keep-successful-logs",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "2",
    "--retries",
    "0",
    "--latency-wait",
    "5",
]
pytestmark = pytest.mark.skipif(
    os.environ.get("QID_SLURM") != "1",
    reason="needs the SLURM cluster that tests/slurm/run.sh starts",
)


def snakemake(
    workdir: Path, *args: str, configfile: Path = MICRO, slurm: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    configs = [str(configfile), str(PER_CELL)] if slurm else [str(configfile)]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--configfile",
        *configs,
        "--directory",
        str(workdir),
    ]
    cmd += ["--profile", str(ROOT / "profiles" / "slurm"), *OVERLAY] if slurm else ["--cores", "2"]
    # timeout -k: the plugin can ignore SIGTERM while it polls.
    return subprocess.run(
        ["timeout", "-k", "10", str(timeout), *cmd, *args], capture_output=True, text=True
    )


def submitted(run: subprocess.CompletedProcess) -> dict[str, str]:
    """SLURM job id -> rule (or group), from the plugin's 'submitted with SLURM jobid' lines."""
    out = run.stdout + run.stderr
    jobs = re.findall(r"SLURM jobid (\d+) \(log: \S*?(?:rule|group)_(\w+)", out)
    return {job_id: rule for job_id, rule in jobs}


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm")
    run = snakemake(workdir)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return workdir, run


def test_every_job_went_through_sbatch(cluster_run):
    workdir, run = cluster_run
    stats = re.search(r"Job stats:\n(.*?)\n\n", run.stdout + run.stderr, re.S).group(1)
    count = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M)}
    jobs = submitted(run)
    # Every job but the local target rule `all`; a checkpoint's 16-bit eval and cells are one.
    micro = yaml.safe_load(MICRO.read_text())["suites"]["micro"]
    assert count["evaluate_base"] == len(micro["sizes"]) * len(micro["steps"])
    assert count["quantize"] > 0
    assert len(jobs) == count["total"] - 1 - count["quantize"]
    assert sum(rule.startswith("checkpoint") for rule in jobs.values()) == count["evaluate_base"]
    logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert {p.stem for p in logs} >= set(jobs)


def test_gpu_jobs_asked_for_a_gpu_and_cpu_jobs_did_not(cluster_run):
    _, run = cluster_run
    for job_id, rule in submitted(run).items():
        info = subprocess.run(
            ["scontrol", "show", "job", "-d", job_id], capture_output=True, text=True, check=True
        ).stdout
        assert "JobState=COMPLETED" in info, info
        asks_gpu = "gres/gpu" in info or "gres:gpu" in info
        assert asks_gpu == asks_for_a_gpu(rule), (rule, info)


def test_outputs_equal_a_local_run(cluster_run, tmp_path):
    workdir, _ = cluster_run
    local = snakemake(tmp_path, slurm=False)
    assert local.returncode == 0, local.stderr[-3000:]
    key = ["suite", "size", "step", "method", "bits", "eval_set"]
    a = pd.read_parquet(workdir / "results" / "qid.parquet").sort_values(key, ignore_index=True)
    b = pd.read_parquet(tmp_path / "results" / "qid.parquet").sort_values(key, ignore_index=True)
    assert len(a) == len(b) > 0
    for column in ("loss_16", "loss_q", "qid", "tokens", "n_params"):
        assert (a[column] - b[column]).abs().max() < 1e-9, column
    # How the grid is cut into jobs is not part of the study's provenance hash.
    assert (a.config_hash == b.config_hash).all()


def test_a_failing_job_is_reported_and_the_run_exits_nonzero(cluster_run, tmp_path):
    workdir, _ = cluster_run
    config = yaml.safe_load(MICRO.read_text())
    # Calibration rows of 8 tokens: GPTQ keeps only rows longer than 10 tokens, so the cell
    # fails at run time, after the dry run accepted it.
    config["data"]["calibration"]["length"] = 8
    bad = tmp_path / "failing.yaml"
    bad.write_text(yaml.safe_dump(config))
    cell = "results/micro/eval/h32-l1/step8/gptq-2bit/sotu.json"
    run = snakemake(workdir, cell, configfile=bad, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Error in rule quantize" in out and "calibration texts is longer than" in out
    assert not (workdir / cell).exists()
    assert (workdir / "results" / "qid.parquet").exists()  # nothing computed before is lost


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--default-resources=slurm_partition=nope", "invalid partition"),
        ("--set-resources=corpus:gpu=8", "Batch job submission failed"),
    ],
)
def test_a_bad_profile_value_fails_with_slurms_message(tmp_path, flag, message):
    run = snakemake(tmp_path, "results/data/train_ids.npy", flag, timeout=180)
    assert run.returncode != 0
    assert message.lower() in (run.stdout + run.stderr).lower()
