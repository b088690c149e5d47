"""The grid (suite x size x step x method x bits) and the path of every file it produces.

Paths live here, not in the rules, so that the Snakemake rules, `qid aggregate` and the tests
agree on them; `{...}` fields are Snakemake wildcards and `str.format` fields alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

RESULTS = "results"
TOKENIZER = f"{RESULTS}/data/tokenizer"
TRAIN_IDS = f"{RESULTS}/data/train_ids.npy"
CALIBRATION = f"{RESULTS}/data/calibration.parquet"
EVAL_TEXTS = f"{RESULTS}/data/eval/{{eval_set}}.parquet"
TRAINED = f"{RESULTS}/{{suite}}/checkpoints/{{size}}"
TRAIN_LOG = f"{RESULTS}/{{suite}}/train/{{size}}.parquet"
CHECKPOINT = f"{TRAINED}/step{{step}}"
RELEASED = f"{RESULTS}/{{suite}}/released/{{size}}/step{{step}}.json"  # hub revision deleted
QUANTIZED = f"{RESULTS}/{{suite}}/quantized/{{size}}/step{{step}}/{{method}}-{{bits}}bit"
QUANT_RECORD = f"{QUANTIZED}.json"
BASE = "base"  # the unquantized (16-bit) model, evaluated once and shared by all cells
EVAL = f"{RESULTS}/{{suite}}/eval/{{size}}/step{{step}}/{{variant}}/{{eval_set}}.json"
QID_TABLE = f"{RESULTS}/qid.parquet"
FITS = f"{RESULTS}/fits.json"
SUMMARY = f"{RESULTS}/summary.md"
TABLE1 = f"{RESULTS}/table1{{which}}.{{ext}}"  # which: "" (fitted per bit width), "_published"
FIGURE = f"{RESULTS}/figures/{{name}}.{{ext}}"
CHECKPOINT_META = "qid_checkpoint.json"  # written into every trained checkpoint directory


def variant(method: str, bits: int | str) -> str:
    """A cell's directory name under eval/ and quantized/ (also as a wildcard pattern)."""
    return f"{method}-{bits}bit"


def parse_variant(name: str) -> tuple[str, int] | None:
    """(method, bits) of a `variant` name; None for anything else."""
    match = re.fullmatch(r"(\w+)-(\d+)bit", name)
    return (match[1], int(match[2])) if match else None


@dataclass(frozen=True)
class Checkpoint:
    suite: str
    size: str
    step: int

    @property
    def path(self) -> str:
        return CHECKPOINT.format(suite=self.suite, size=self.size, step=self.step)

    def eval_path(self, variant: str, eval_set: str) -> str:
        return EVAL.format(
            suite=self.suite, size=self.size, step=self.step, variant=variant, eval_set=eval_set
        )


@dataclass(frozen=True)
class Cell:
    checkpoint: Checkpoint
    method: str
    bits: int

    @property
    def variant(self) -> str:
        return variant(self.method, self.bits)

    def _fields(self) -> dict:
        c = self.checkpoint
        return dict(suite=c.suite, size=c.size, step=c.step, method=self.method, bits=self.bits)

    @property
    def quantized(self) -> str:
        return QUANTIZED.format(**self._fields())

    @property
    def record(self) -> str:
        return QUANT_RECORD.format(**self._fields())

    def eval_path(self, eval_set: str) -> str:
        return self.checkpoint.eval_path(self.variant, eval_set)


def checkpoints(config: dict) -> Iterator[Checkpoint]:
    for suite, spec in config["suites"].items():
        for size in spec["sizes"]:
            for step in spec["steps"]:
                yield Checkpoint(suite, size, step)


def suite_methods(config: dict, suite: str) -> list[str]:
    return config["suites"][suite].get("methods", list(config["methods"]))


def suite_variants(config: dict, suite: str) -> list[tuple[str, int]]:
    """The (method, bits) pairs every checkpoint of a suite is quantized with, sorted: they
    reach the workflow's jobs as params, so the config's key order must not change them."""
    return sorted(
        (method, bits)
        for method in suite_methods(config, suite)
        for bits in config["methods"][method]["bits"]
    )


def cells(config: dict) -> Iterator[Cell]:
    for ckpt in checkpoints(config):
        for method, bits in suite_variants(config, ckpt.suite):
            yield Cell(ckpt, method, bits)


def method_options(config: dict, method: str) -> dict:
    """The options a method's backend receives: its config block less the grid axis `bits`."""
    options = {k: v for k, v in config["methods"][method].items() if k not in ("bits", "threads")}
    options["calibration_length"] = config["data"]["calibration"]["length"]
    return options


def estimate(config: dict) -> dict:
    """Size of a study before it runs: checkpoints, cells, jobs, disk and requested GPU-hours.

    Disk assumes 16-bit weights (2 bytes per parameter; `total_params` of a size, else N) and
    quantized blocks at `bits`/8 bytes per non-embedding parameter plus 16-bit embeddings.
    GPU-hours are what the per-size `resources` table requests: an upper bound.
    """
    execution = config.get("execution", {})
    per_checkpoint = execution.get("per_job", "cell") == "checkpoint"
    resources = config.get("resources", {})
    default_job = resources.get("gpu_job", {"mem_mb": 4000, "runtime": 30})
    gpus = max(1, resources.get("gpu", 0))
    out = {"checkpoints": 0, "cells": 0, "evaluations": 0, "gpu_jobs": 0, "gpu_hours": 0.0,
           "checkpoint_bytes": 0.0, "quantized_bytes": 0.0}  # fmt: skip
    n_eval_sets = len(config["eval_sets"])
    for suite, spec in config["suites"].items():
        variants = suite_variants(config, suite)
        for size, size_spec in spec["sizes"].items():
            n = size_spec.get("n_params")
            total = size_spec.get("total_params", n)
            steps = len(spec["steps"])
            out["checkpoints"] += steps
            out["cells"] += steps * len(variants)
            out["evaluations"] += steps * (len(variants) + 1) * n_eval_sets
            jobs = 1 if per_checkpoint else len(variants) + 1
            minutes = resources.get("sizes", {}).get(size, default_job)["runtime"]
            out["gpu_jobs"] += steps * jobs
            out["gpu_hours"] += steps * (len(variants) + 1) * minutes / 60 * gpus
            if n and total:
                out["checkpoint_bytes"] += steps * 2 * total
                out["quantized_bytes"] += steps * sum(
                    bits / 8 * n + 2 * (total - n) for _, bits in variants
                )
    return out
