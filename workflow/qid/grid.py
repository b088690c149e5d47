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
# Fig. 12: weight change between consecutive checkpoints, one file pair per trained suite.
WEIGHT_CHANGES = f"{RESULTS}/{{suite}}/weights/changes.parquet"
WEIGHT_SAMPLES = f"{RESULTS}/{{suite}}/weights/samples.parquet"
# Sec. 4.4 / Fig. 14: BitNet b1.58 twins of some of a suite's models (config `bitnet`), trained
# on the same data, seed, init and token budget. The 16-bit twins are the suite's own models and
# training logs, so only the BitNet models train.
BITNET_DIR = f"{RESULTS}/{{suite}}/bitnet"
BITNET_TRAINED = f"{BITNET_DIR}/checkpoints/{{size}}"
BITNET_TRAIN_LOG = f"{BITNET_DIR}/train/{{size}}.parquet"
BITNET_EVAL = f"{BITNET_DIR}/eval/{{size}}/step{{step}}/{{eval_set}}.json"
BITNET_TABLE = f"{RESULTS}/bitnet.{{ext}}"
# One log per job, by rule (`fetch`, `release` and `checkpoint` stand for their per-suite rules).
LOGS = {
    "corpus": "logs/data/corpus.log",
    "eval_set": "logs/data/eval/{eval_set}.log",
    "calibration": "logs/data/calibration.log",
    "train": "logs/{suite}/train/{size}.log",
    "fetch": "logs/{suite}/fetch/{size}/step{step}.log",
    "release": "logs/{suite}/release/{size}/step{step}.log",
    "evaluate_base": "logs/{suite}/evaluate/{size}/step{step}/base.log",
    "quantize": "logs/{suite}/quantize/{size}/step{step}/{method}-{bits}bit.log",
    "checkpoint": "logs/{suite}/quantize/{size}/step{step}.log",
    "size": "logs/{suite}/quantize/{size}.log",
    "cell_not_in_grid": "logs/{suite}/not_in_grid/{size}/step{step}/{other}/{eval_set}.log",
    "aggregate": "logs/aggregate.log",
    "fit": "logs/fit.log",
    "table1": "logs/table1.log",
    "summary": "logs/summary.log",
    "weights": "logs/{suite}/weights.log",
    "train_bitnet": "logs/{suite}/bitnet/train/{size}.log",
    "evaluate_bitnet": "logs/{suite}/bitnet/evaluate/{size}/step{step}.log",
    "bitnet_table": "logs/bitnet.log",
    "figures": "logs/figures.log",
}


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


def trained_suites(config: dict) -> list[str]:
    """The suites trained here (the others are fetched: hub revisions or local directories)."""
    return [s for s, spec in config["suites"].items() if spec["source"] == "train"]


def evaluations(config: dict) -> list[str]:
    """Every eval JSON of the grid, sorted: the 16-bit model's and every cell's."""
    base = {c.eval_path(BASE, e) for c in checkpoints(config) for e in config["eval_sets"]}
    evals = {cell.eval_path(e) for cell in cells(config) for e in config["eval_sets"]}
    return sorted(base | evals)


def checkpoint_evaluations(config: dict, ckpt: Checkpoint) -> list[str]:
    """Every evaluation of one checkpoint: the 16-bit model's, then its cells'."""
    base = [ckpt.eval_path(BASE, e) for e in config["eval_sets"]]
    return base + [
        Cell(ckpt, m, b).eval_path(e)
        for m, b in suite_variants(config, ckpt.suite)
        for e in config["eval_sets"]
    ]


def released(config: dict) -> list[str]:
    """Markers of hub revisions deleted from the cache once their cells are done."""
    return [
        RELEASED.format(suite=c.suite, size=c.size, step=c.step)
        for c in checkpoints(config)
        if config["suites"][c.suite]["source"] == "hub" and not config["suites"][c.suite]["keep"]
    ]


def previous_cell(config: dict, cell: Cell) -> Cell | None:
    """The cell before `cell` in its suite's canonical order (None for the first)."""
    variants = suite_variants(config, cell.checkpoint.suite)
    i = variants.index((cell.method, cell.bits))
    return Cell(cell.checkpoint, *variants[i - 1]) if i else None


def other_variant(config: dict) -> str:
    """A wildcard pattern: a variant directory that is neither `BASE` nor a configured cell."""
    known = {BASE} | {variant(m, b) for s in config["suites"] for m, b in suite_variants(config, s)}
    return "(?!(?:{})/)[^/]+".format("|".join(re.escape(v) for v in known))


def suite_threads(config: dict, suite: str) -> int:
    """Threads of a checkpoint's job: the most any of its suite's methods asks for."""
    return max(config["methods"][m].get("threads", 1) for m in suite_methods(config, suite))


def size_priority(config: dict, suite: str, size: str, training: bool = False) -> float:
    """Snakemake `priority` of a size's jobs, so that on a few cores the longest chains start
    first: every training job before any checkpoint's evaluation (a training job holds back all
    its checkpoints' jobs), and within each kind the larger model first. Size is the weights in
    millions (decoder blocks plus output head, from a trained suite's `sizes` entry; a hub or
    local size's `n_params` if given, else 0)."""
    arch = config["suites"][suite]["sizes"].get(size) or {}
    if "hidden_size" in arch:
        from qid.quantize.layers import neox_layers  # the block's linear maps, as validated

        block = neox_layers(arch["hidden_size"], arch.get("intermediate_size"))
        vocab = config.get("data", {}).get("tokenizer", {}).get("vocab_size", 0)
        weights = arch["num_layers"] * sum(x.in_features * x.out_features for x in block)
        weights += vocab * arch["hidden_size"]
    else:
        weights = arch.get("n_params", 0)
    return weights / 1e6 + (_TRAINING_FIRST if training else 0)


# Above any model's weights in millions (a 1T model is 1e6).
_TRAINING_FIRST = 1e7


def bitnet_size(config: dict, suite: str, size: str) -> dict:
    """The architecture of a BitNet twin; ValueError for one the `bitnet` block does not train."""
    bitnet = config.get("bitnet")
    if not bitnet or suite != bitnet["suite"] or size not in bitnet["sizes"]:
        raise ValueError(f"no BitNet twin of {suite}/{size} in the config's `bitnet` block")
    return config["suites"][suite]["sizes"][size]


def bitnet_evals(config: dict) -> list[str]:
    """The final BitNet checkpoints' evaluations, every eval set."""
    bitnet = config.get("bitnet")
    if not bitnet:
        return []
    last = config["suites"][bitnet["suite"]]["steps"][-1]
    return [
        BITNET_EVAL.format(suite=bitnet["suite"], size=size, step=last, eval_set=e)
        for size in bitnet["sizes"]
        for e in config["eval_sets"]
    ]


def bitnet_train_logs(config: dict) -> list[str]:
    """Training logs of the BitNet models, then of their 16-bit twins (Fig. 14)."""
    bitnet = config.get("bitnet")
    if not bitnet:
        return []
    return [
        template.format(suite=bitnet["suite"], size=size)
        for template in (BITNET_TRAIN_LOG, TRAIN_LOG)
        for size in bitnet["sizes"]
    ]


def figure_data(config: dict) -> dict[str, list[str]]:
    """The files of the tables other than the QiD table and the fits (qid.figures.DATA's keys).
    Fig. 12 reads every checkpoint of a suite at once: trained suites only (a hub suite's
    revisions are deleted from the cache as its cells finish)."""
    trained = trained_suites(config)
    return {
        "weight_changes": [WEIGHT_CHANGES.format(suite=s) for s in trained],
        "weight_samples": [WEIGHT_SAMPLES.format(suite=s) for s in trained],
        "train": bitnet_train_logs(config),
    }


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
    per_job = execution.get("per_job", "cell")
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
            jobs = {"cell": steps * (len(variants) + 1), "checkpoint": steps, "size": 1}[per_job]
            minutes = resources.get("sizes", {}).get(size, default_job)["runtime"]
            out["gpu_jobs"] += jobs
            out["gpu_hours"] += steps * (len(variants) + 1) * minutes / 60 * gpus
            if n and total:
                out["checkpoint_bytes"] += steps * 2 * total
                out["quantized_bytes"] += steps * sum(
                    bits / 8 * n + 2 * (total - n) for _, bits in variants
                )
    return out
