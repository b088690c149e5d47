"""`snakemake -n` on the paper's grid and on a grid ten times larger: seconds, job counts, and
whether the time grows linearly with the jobs.

The paper grid (Ouyang et al., 2024; /work/shared/facts.md): Pythia 160m ... 12b (6 sizes) x 20
training steps x GPTQ at 2/3/4 bits + bitsandbytes NF4 at 4, on two eval sets. Until the study
has a config for it (e.g. config/pythia.yaml), the grid is written with the embedded
`source: train` suite schema, which validates today and gives the same DAG shape. `--configfile`
times a real config instead. The larger grid is the same config with every suite copied under
ten names (`--scale suites`, works for any config), or with ten times as many steps per suite
(`--scale steps`).

Each dry run is a fresh `python -m snakemake -n` process in an empty temporary `--directory`
(nothing in the repository is touched, no job runs), so the time includes Python's and
Snakemake's start; the default study's dry run is timed too, as that fixed cost. Printed: the
seconds ratio of the larger to the paper grid beside their job ratio, and the marginal seconds per
job from the default study to the paper grid and from there to the larger grid (linear: equal).
Each grid is run `--repeats` times and the fastest kept (the first run also pays a cold start).
`--profile` runs the larger grid under cProfile and prints where the time goes.

    python benchmarks/dryrun_scaling.py
"""

from __future__ import annotations

import argparse
import copy
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import yaml

ROOT = common.ROOT
GOAL_SECONDS = 10.0

# Pythia's architectures (hidden, layers, heads), the checkpoints' steps (facts.md).
PYTHIA = {
    "160m": (768, 12, 12),
    "410m": (1024, 24, 16),
    "1b": (2048, 16, 8),
    "2.8b": (2560, 32, 32),
    "6.9b": (4096, 32, 32),
    "12b": (5120, 36, 40),
}
PAPER_STEPS = [
    512, 1000, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 20000,
    24000, 29000, 36000, 43000, 57000, 71000, 86000, 93000, 95000, 98000,
]  # fmt: skip


def paper_config() -> dict:
    """The paper's grid in today's config schema (`source: train` stands in for the hub)."""
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    training = {
        **default["suites"]["neox-sotu"]["training"],
        "context": 2048,
        "batch_size": 1024,
        "warmup_steps": 256,  # must end before the first checkpoint (512)
    }
    return {
        "seed": 0,
        "data": default["data"],
        "eval_sets": {
            "sotu": {"source": "heldout", "n_texts": 1000},
            "wiki": {"source": "wiki_offline", "n_texts": 1000},
        },
        "suites": {
            "pythia": {
                "source": "train",
                "sizes": {
                    name: {"hidden_size": h, "num_layers": n, "num_heads": a}
                    for name, (h, n, a) in PYTHIA.items()
                },
                "steps": PAPER_STEPS,
                "training": training,
            }
        },
        "methods": {
            "gptq": {"bits": [2, 3, 4], "group_size": 128, "desc_act": False, "damp_percent": 0.01},
            "bnb_nf4": {"bits": [4]},
        },
        "evaluate": {"context": 2048, "batch_tokens": 65536},
        "fit": {"method": "gptq", "eval_set": "sotu"},
    }


def scaled(config: dict, factor: int, how: str) -> dict:
    """`config` with `factor` times the checkpoints: suites copied, or steps multiplied."""
    out = copy.deepcopy(config)
    if how == "suites":
        out["suites"] = {
            name if k == 0 else f"{name}-x{k}": copy.deepcopy(spec)
            for k in range(factor)
            for name, spec in config["suites"].items()
        }
    else:
        for spec in out["suites"].values():
            steps = spec["steps"]
            spec["steps"] = [s * factor + k for s in steps for k in range(factor)]
    return out


def dry_run(config: Path, workdir: Path, profile: Path | None = None) -> tuple[float, int, str]:
    """(seconds, number of jobs, output) of `snakemake -n` on `config` in `workdir`."""
    env = common.checkout_env()
    python = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else [])]
    cmd = [
        *python,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--configfile",
        str(config),
        "--directory",
        str(workdir),
        "--dry-run",
        "--cores",
        "1",
        "--quiet",
        "rules",  # no per-job listing; the job-stats table (and the DAG) stay
    ]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    output = run.stdout + run.stderr
    if run.returncode:
        raise SystemExit(f"snakemake -n failed on {config}:\n{output[-3000:]}")
    match = re.search(r"^total\s+(\d+)\s*$", output, re.M)
    jobs = int(match.group(1)) if match else 0
    return seconds, jobs, output


def print_profile(path: Path, top: int) -> None:
    """Snakemake's stages by cumulative time, the hottest functions, and the workflow's own."""
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(r"snakemake/(dag|workflow|api|jobs|executors)", top)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"(Snakefile|\.smk|/qid/)", top)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configfile", type=Path, help="the paper-grid config (default: generated)")
    p.add_argument("--factor", type=int, default=10, help="size of the larger grid")
    p.add_argument("--scale", choices=["suites", "steps"], default="suites")
    p.add_argument("--repeats", type=int, default=2, help="dry runs of each grid (minimum kept)")
    p.add_argument("--profile", action="store_true", help="cProfile the larger grid's dry run")
    p.add_argument("--top", type=int, default=25, help="profile lines to print")
    args = p.parse_args(argv)

    paper = yaml.safe_load(args.configfile.read_text()) if args.configfile else paper_config()
    grids = {
        "default study": yaml.safe_load((ROOT / "config" / "config.yaml").read_text()),
        "paper grid": paper,
        f"{args.factor}x grid": scaled(paper, args.factor, args.scale),
    }
    print(f"machine: {common.machine()}")
    results: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="qid-dryrun-") as tmp:
        for name, config in grids.items():
            path = Path(tmp) / f"{name.replace(' ', '_')}.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            times, jobs = [], 0
            for r in range(args.repeats):
                workdir = Path(tmp) / f"{path.stem}-{r}"
                workdir.mkdir()
                seconds, jobs, _ = dry_run(path, workdir)
                times.append(seconds)
            results[name] = (best := min(times), jobs)
            print(f"{name:>14}: {jobs:6d} jobs  {best:7.2f} s  ({1e3 * best / jobs:.2f} ms/job)")
        if args.profile:
            name = f"{args.factor}x grid"
            prof = Path(tmp) / "dryrun.prof"
            workdir = Path(tmp) / "profiled"
            workdir.mkdir()
            dry_run(Path(tmp) / f"{name.replace(' ', '_')}.yaml", workdir, profile=prof)
            print(f"\ncProfile of the {name}'s dry run:")
            print_profile(prof, args.top)

    (t0, j0), (t1, j1), (t10, j10) = results.values()
    big = f"{args.factor}x grid"
    print(f"paper grid {t1:.2f} s (goal < {GOAL_SECONDS:g} s), {big} {t10:.2f} s")
    print(
        f"marginal cost per job: default -> paper {1e3 * (t1 - t0) / (j1 - j0):.2f} ms, "
        f"paper -> {big} {1e3 * (t10 - t1) / (j10 - j1):.2f} ms (linear: equal)"
    )
    print(
        f"dry-run scaling: seconds ratio {t10 / t1:.2f}x for a job ratio of {j10 / j1:.2f}x "
        f"(a fixed start of ~{t0:.1f} s included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
