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
GPU_RULES = {"train", "quantize", "evaluate_base", "train_bitnet", "evaluate_bitnet"}
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
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--configfile",
        str(configfile),
        "--directory",
        str(workdir),
    ]
    cmd += ["--profile", str(ROOT / "profiles" / "slurm"), *OVERLAY] if slurm else ["--cores", "2"]
    # timeout -k: the plugin can ignore SIGTERM while it polls.
    return subprocess.run(
        ["timeout", "-k", "10", str(timeout), *cmd, *args], capture_output=True, text=True
    )


def submitted(run: subprocess.CompletedProcess) -> dict[str, str]:
    """SLURM job id -> rule, from the plugin's 'submitted with SLURM jobid' lines."""
    out = run.stdout + run.stderr
    jobs = re.findall(r"SLURM jobid (\d+) \(log: \S*?rule_(\w+)", out)
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
    total = int(re.search(r"^total\s+(\d+)$", stats, re.M).group(1))
    jobs = submitted(run)
    assert len(jobs) == total - 1  # every job but the local target rule `all`
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
        assert asks_gpu == (rule in GPU_RULES or rule.startswith("gpu")), (rule, info)


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


def test_a_failing_job_is_reported_and_the_run_exits_nonzero(cluster_run, tmp_path):
    workdir, _ = cluster_run
    config = yaml.safe_load(MICRO.read_text())
    config["methods"]["rtn"] = {"bits": [5], "group_size": 24}  # 24 does not divide 32 or 64
    bad = tmp_path / "failing.yaml"
    bad.write_text(yaml.safe_dump(config))
    cell = "results/micro/eval/h32-l1/step8/rtn-5bit/sotu.json"
    run = snakemake(workdir, cell, configfile=bad, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Error in rule quantize" in out and "group_size 24" in out
    assert not (workdir / cell).exists()
    assert (workdir / "results" / "qid.parquet").exists()  # nothing computed before is lost


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--default-resources=slurm_partition=nope", "invalid partition"),
        ("--set-resources=data:gpu=8", "Batch job submission failed"),
    ],
)
def test_a_bad_profile_value_fails_with_slurms_message(tmp_path, flag, message):
    run = snakemake(tmp_path, "results/data/train_ids.npy", flag, timeout=180)
    assert run.returncode != 0
    assert message.lower() in (run.stdout + run.stderr).lower()
