"""The embedded default study end to end: wall time and peak memory, against the 10-minute goal.

Runs `snakemake --profile profiles/default` on this checkout's Snakefile and the default config
(`--configfile` for another, e.g. tests/micro/config.yaml) in an empty temporary `--directory`,
so nothing in the repository is read from or written to results/, under `/usr/bin/time -v`.
Every `qid` job imports the checkout's package (PYTHONPATH=workflow).

Memory is reported two ways, because Snakemake runs each job as its own process:
- `/usr/bin/time -v`'s maximum resident set size is that of the *largest single process* of the
  tree (Snakemake itself or one job), not of the jobs running at the same time together;
- a sampler reads /proc every `--interval` seconds and records the peak *sum* over the whole
  process tree of RSS (which counts shared library pages once per process, so it overstates)
  and of PSS (shared pages split between the processes that map them: the closer figure to what
  the machine must hold). Sampling can miss peaks shorter than the interval.

    python benchmarks/end_to_end.py                                    # the default study
    python benchmarks/end_to_end.py --configfile tests/micro/config.yaml
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common

ROOT = common.ROOT
GOAL_SECONDS = 600.0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    rss = re.search(r"^Rss:\s+(\d+)", text, re.M)
    pss = re.search(r"^Pss:\s+(\d+)", text, re.M)
    return (int(rss.group(1)) if rss else 0, int(pss.group(1)) if pss else 0)


class TreeSampler(threading.Thread):
    """Peak of the summed RSS and PSS over a process and all its descendants."""

    def __init__(self, root_pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root_pid, interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            tree, pids, todo = _children(), [], [self.root]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo.extend(tree.get(pid, []))
            mem = [_memory_kib(pid) for pid in pids]
            self.peak_rss = max(self.peak_rss, sum(r for r, _ in mem))
            self.peak_pss = max(self.peak_pss, sum(p for _, p in mem))
            self.peak_procs = max(self.peak_procs, len(pids))
            self.stop.wait(self.interval)


def parse_time_v(text: str) -> dict[str, float]:
    out = {}
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if rss:
        out["max_rss_kib"] = float(rss.group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if wall:
        seconds = 0.0
        for part in wall.group(1).split(":"):
            seconds = seconds * 60 + float(part)
        out["wall_s"] = seconds
    return out


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")
_START = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_seconds(log_text: str) -> dict[str, tuple[int, float]]:
    """Rule -> (jobs, job-seconds) from a Snakemake log: each job from its start to its finish
    stamp (whole seconds; a job's seconds include its Python start-up and imports)."""
    stamp, rule, started, out = None, None, {}, {}
    for line in log_text.splitlines():
        if m := _STAMP.match(line):
            stamp = time.mktime(time.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"))
        elif m := _START.match(line):
            rule = m.group(1)
        elif (m := _JOBID.match(line)) and rule:
            started[m.group(1)], rule = stamp, None
        elif (m := _DONE.match(line)) and m.group(1) in started:
            n, sec = out.get(m.group(2), (0, 0.0))
            out[m.group(2)] = (n + 1, sec + stamp - started.pop(m.group(1)))
    return out


def print_job_seconds(log_text: str) -> None:
    by_rule = job_seconds(log_text)
    total = sum(sec for _, sec in by_rule.values())
    print("job-seconds by rule (start to finish, start-up included):")
    for rule, (n, sec) in sorted(by_rule.items(), key=lambda kv: -kv[1][1]):
        print(f"  {rule:<32} {n:>3} jobs {sec:>7.0f} s  {100 * sec / max(total, 1):5.1f}%")
    print(f"  {'total':<32} {sum(n for n, _ in by_rule.values()):>3} jobs {total:>7.0f} s")


def job_count(log_text: str) -> str:
    jobs = re.search(r"(\d+) of (\d+) steps \(100%\) done", log_text)
    return jobs.group(2) if jobs else "?"


def goal_ratio(wall: float) -> str:
    return f"ratio to the 10-min goal {wall / GOAL_SECONDS:.2f}x (goal <= 1x)"


def readme_command() -> str:
    """The README's first command: the first line of its first code block."""
    text = (ROOT / "README.md").read_text()
    return text.split("```bash\n", 1)[1].split("\n", 1)[0]


def run_readme(args: argparse.Namespace) -> int:
    """The README's first command verbatim in a fresh clone of this checkout, install included."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qid-readme-"))
    clone = workdir / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    cmd = readme_command()
    print(f"machine: {common.machine()}\nclone: {clone}\ncommand: {cmd}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    start = time.perf_counter()
    with (workdir / "readme.log").open("w") as fh:
        rc = subprocess.run(
            ["bash", "-c", cmd], cwd=clone, stdout=fh, stderr=subprocess.STDOUT, env=env
        ).returncode
    wall = time.perf_counter() - start
    logs = sorted(
        (clone / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda f: f.stat().st_size
    )
    if rc or not logs:
        print(
            f"FAIL: the README's first command exited with {rc} (log: {workdir / 'readme.log'})",
            file=sys.stderr,
        )
        return rc or 1
    run_log = logs[-1].read_text()
    print(f"jobs: {job_count(run_log)}")
    print_job_seconds(run_log)
    if not (args.workdir or args.keep):
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"README first command: {wall:.1f} s wall ({wall / 60:.2f} min); {goal_ratio(wall)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.5, help="memory sampling (seconds)")
    p.add_argument("--workdir", type=Path, help="run here (kept) instead of a temporary dir")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--readme",
        action="store_true",
        help="time the README's first command verbatim in a fresh clone (install included)",
    )
    args = p.parse_args(argv)
    if args.readme:
        return run_readme(args)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qid-e2e-"))
    workdir.mkdir(parents=True, exist_ok=True)
    time_log = workdir / "time-v.txt"
    timer = ["/usr/bin/time", "-v", "-o", str(time_log)] if Path("/usr/bin/time").exists() else []
    cmd = [
        *timer,
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--profile",
        str(ROOT / "profiles" / "default"),
        "--configfile",
        str(args.configfile.resolve()),
        "--directory",
        str(workdir),
        "--cores",
        str(args.cores),
    ]
    env = common.checkout_env()
    print(f"machine: {common.machine()}; --cores {args.cores}")
    print(f"config: {args.configfile}; workdir: {workdir}")
    log = workdir / "snakemake.log"
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid, args.interval)
        sampler.start()
        rc = proc.wait()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    timed = parse_time_v(time_log.read_text()) if time_log.is_file() else {}
    if rc:
        print(log.read_text()[-4000:], file=sys.stderr)
        print(f"FAIL: snakemake exited with {rc} (log: {log})", file=sys.stderr)
        return rc
    outputs = ("results/qid.parquet", "results/fits.json")
    missing = [f for f in outputs if not (workdir / f).is_file()]
    if missing:
        print(f"FAIL: the run did not write {', '.join(missing)}", file=sys.stderr)
        return 1
    mib = 1 / 1024
    single = timed.get("max_rss_kib", 0) * mib
    print(f"jobs: {job_count(log.read_text())}; wall {wall:.1f} s ({wall / 60:.2f} min)")
    print_job_seconds(log.read_text())
    print(f"peak RSS of the largest single process (/usr/bin/time -v): {single:.0f} MiB")
    print(
        f"peak summed over the process tree (sampled every {args.interval:g} s, up to "
        f"{sampler.peak_procs} processes): RSS {sampler.peak_rss * mib:.0f} MiB, "
        f"PSS {sampler.peak_pss * mib:.0f} MiB"
    )
    if not (args.workdir or args.keep):
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"end to end: {wall:.1f} s wall, peak {sampler.peak_pss * mib:.0f} MiB PSS; "
        + goal_ratio(wall)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
