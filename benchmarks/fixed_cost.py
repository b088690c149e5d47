"""A job's fixed cost: each `qid` stage of the default study loading its imports, against torch.

Every Snakemake job is a fresh `qid <stage>` process that pays Python start-up and its imports
before it does any work. This takes the default study's own job commands from a dry run
(`snakemake -n -p` in an empty temporary `--directory`), one per stage (`train --bitnet`
counted apart), and runs each with QID_IMPORT_ONLY=1: the process parses the job's real
arguments, loads what that command loads when it runs (its list in `qid.cli.imports`, e.g. the
backend and library of each method in a `qid cells` job) and exits 0. Each is timed in fresh
processes, alternating with `python -c "import torch"`, medians of --repeats; the ratio is the
stage's median over the median of the torch runs beside it.

    python benchmarks/fixed_cost.py                    # every stage, medians of 5
    python benchmarks/fixed_cost.py --repeats 3 --stages train,cells,figures
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

ROOT = common.ROOT
GOAL = 1.5
BASELINE = [sys.executable, "-c", "import torch"]


def stage_commands(configfile: Path = ROOT / "config" / "config.yaml") -> dict[str, list[str]]:
    """The first job command of each `qid` stage in the default study's dry run, as argv after
    `qid` (shell redirections and grouping dropped; `&&`-chained commands taken apart)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--snakefile"]
    cmd += [str(ROOT / "Snakefile"), "--configfile", str(Path(configfile).resolve())]
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [*cmd, "--directory", tmp],
            capture_output=True,
            text=True,
            env=common.checkout_env(),
            check=True,
        ).stdout
    stages: dict[str, list[str]] = {}
    for line in out.splitlines():
        if not line.startswith("Shell command:"):
            continue
        shell = line.split(":", 1)[1].split(" > ")[0].strip(" ()")
        for part in shell.split("&&"):
            argv = shlex.split(part)
            if not argv or argv[0] != "qid":
                continue
            name = argv[1] + (" --bitnet" if "--bitnet" in argv else "")
            stages.setdefault(name, argv[1:])
    return stages


def _seconds(argv: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed:\n{done.stderr[-2000:]}")
    return seconds


def measure(stages: dict[str, list[str]], repeats: int) -> list[tuple[str, float, float]]:
    """(stage, median seconds, median seconds of the torch runs alternating with it)."""
    env = {**common.checkout_env(), "QID_IMPORT_ONLY": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as cwd:  # the jobs' relative paths point nowhere real
        for name, args in stages.items():
            stage, torch = [], []
            for i in range(repeats):  # alternate, starting with each side in turn
                pair = [(torch, BASELINE), (stage, [sys.executable, "-m", "qid.cli", *args])]
                for times, argv in pair[:: 1 if i % 2 == 0 else -1]:
                    times.append(_seconds(argv, env, cwd))
            rows.append((name, statistics.median(stage), statistics.median(torch)))
            print(
                f"{name:<14} {rows[-1][1]:6.2f} s   import torch {rows[-1][2]:5.2f} s   "
                f"{rows[-1][1] / rows[-1][2]:5.2f}x",
                flush=True,
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="runs of each side (median)")
    p.add_argument("--stages", help="comma-separated stages to measure (default: all)")
    p.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    args = p.parse_args()
    stages = stage_commands(args.configfile)
    if args.stages:
        wanted = [s.strip() for s in args.stages.split(",")]
        unknown = [s for s in wanted if s not in stages]
        if unknown:
            raise SystemExit(f"no such stage in the study: {unknown}; stages: {list(stages)}")
        stages = {s: stages[s] for s in wanted}
    load = os.getloadavg()
    print(f"machine: {common.machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{len(stages)} stages, medians of {args.repeats}, QID_IMPORT_ONLY=1 vs import torch")
    rows = measure(stages, args.repeats)
    name, seconds, torch = max(rows, key=lambda r: r[1] / r[2])
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    verdict = "meets" if seconds / torch <= GOAL else "misses"
    print(
        f"worst fixed cost: {name} {seconds / torch:.2f}x import torch "
        f"({seconds:.2f} vs {torch:.2f} s; goal <= {GOAL}x: {verdict})"
    )


if __name__ == "__main__":
    main()
