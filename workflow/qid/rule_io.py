"""The input and output functions of the workflow's rules (workflow/rules/*.smk), bound to a
config: what a job needs and writes, from its wildcards.

Here rather than in the .smk files, where Snakemake's linter wants no functions beside rules,
and where no unit test reaches them. A wildcard outside the config raises WorkflowError with
one line naming it (Snakemake prints it as is, where any other exception gets a traceback).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from snakemake.exceptions import WorkflowError
from snakemake.io import directory, expand, temp
from snakemake.ioflags import update

from qid import grid
from qid.quantize import check_bits, get_method
from qid.rule_args import not_in_grid


def checkpoint_path(wildcards: Any) -> str:
    """The grid's path of the checkpoint a job works on."""
    return grid.CHECKPOINT.format(suite=wildcards.suite, size=wildcards.size, step=wildcards.step)


def _at_step(wildcards: Any, step: int) -> SimpleNamespace:
    return SimpleNamespace(suite=wildcards.suite, size=wildcards.size, step=str(step))


def calibration_arg(wildcards: Any, input: Any) -> str:
    """`--calibration PATH` for a job whose inputs hold calibration texts."""
    return f"--calibration {input.calibration}" if "calibration" in input.keys() else ""


class RuleIO:
    """The rules' input and output functions for one config (Snakemake calls the bound
    methods with a job's wildcards)."""

    def __init__(self, config: dict):
        self.config = config
        self.eval_sets = list(config["eval_sets"])
        # Built once: input functions run per job (benchmarks/dryrun_scaling.py profiles them).
        self.eval_texts = expand(grid.EVAL_TEXTS, eval_set=self.eval_sets)
        self.keep_quantized = config["execution"]["keep_quantized"]
        self.grouped = bool(config["execution"]["group"])
        self.figure_data = grid.figure_data(config)

    def figure_inputs(self, name: str) -> dict:
        """A figure's inputs: the QiD table and the fits, or its other tables (qid.figures.DATA)."""
        from qid.figures import DATA

        if name in DATA:
            return {key: self.figure_data[key] for key in DATA[name]}
        return {"table": grid.QID_TABLE, "fits": grid.FITS}

    def all_figure_inputs(self) -> dict:
        """Every figure's inputs, for the one job that draws them all."""
        from qid.figures import FIGURES

        inputs: dict = {}
        for name in FIGURES:
            inputs.update(self.figure_inputs(name))
        return inputs

    def checkpoint_of(self, wildcards: Any) -> grid.Checkpoint:
        return grid.Checkpoint(wildcards.suite, wildcards.size, int(wildcards.step))

    def checkpoint_input(self, wildcards: Any) -> str:
        """What a checkpoint's jobs wait for: the training job that writes all its steps, or
        the fetched checkpoint."""
        suites = self.config["suites"]
        suite = suites.get(wildcards.suite)
        if suite is None or wildcards.size not in suite["sizes"]:
            raise WorkflowError(
                f"no suite/size {wildcards.suite}/{wildcards.size} in the config "
                f"(suites: {', '.join(suites)})"
            )
        if int(wildcards.step) not in suite["steps"]:
            raise WorkflowError(
                f"step {wildcards.step} is not a checkpoint of suite {wildcards.suite} "
                f"(steps: {suite['steps']})"
            )
        if suite["source"] != "train":
            return checkpoint_path(wildcards)
        return grid.TRAINED.format(suite=wildcards.suite, size=wildcards.size)

    def base_evals(self, wildcards: Any) -> list[str]:
        return [self.checkpoint_of(wildcards).eval_path(grid.BASE, e) for e in self.eval_sets]

    def checkpoint_evals(self, wildcards: Any) -> list[str]:
        """Every evaluation of one checkpoint: the 16-bit model's and its cells'."""
        return grid.checkpoint_evaluations(self.config, self.checkpoint_of(wildcards))

    def cell_inputs(self, wildcards: Any) -> dict:
        """A (method, bits) cell needs its checkpoint, the eval texts, its checkpoint's 16-bit
        evals, and calibration if its method calibrates."""
        try:
            check_bits(wildcards.method, int(wildcards.bits))
        except ValueError as err:
            raise WorkflowError(str(err)) from None
        inputs = {
            "checkpoints": self.checkpoint_input(wildcards),
            "texts": self.eval_texts,
            "base": self.base_evals(wildcards),
        }
        if get_method(wildcards.method).calibration:
            inputs["calibration"] = grid.CALIBRATION
        if self.grouped:
            inputs["previous"] = self.previous_cell(wildcards)
        return inputs

    def previous_cell(self, wildcards: Any) -> str | list:
        """With `execution.group`, a checkpoint's cells run one after another: Snakemake asks a
        group job for the summed resources of the jobs that may run side by side (N cells, N
        GPUs), so chaining them keeps the SLURM job at one cell's GPUs and memory."""
        cell = grid.Cell(self.checkpoint_of(wildcards), wildcards.method, int(wildcards.bits))
        previous = grid.previous_cell(self.config, cell)
        return previous.record if previous else []

    def checkpoint_job_inputs(self, wildcards: Any) -> dict:
        """A checkpoint's job needs the checkpoint, the eval texts, and calibration if used."""
        inputs = {"checkpoints": self.checkpoint_input(wildcards), "texts": self.eval_texts}
        methods = grid.suite_methods(self.config, wildcards.suite)
        if any(get_method(m).calibration for m in methods):
            inputs["calibration"] = grid.CALIBRATION
        return inputs

    def size_job_inputs(self, wildcards: Any) -> dict:
        """A size's job (`execution.per_job: size`) needs what each of its checkpoints' jobs
        needs: the training job's output once, or every fetched checkpoint."""
        steps = self.config["suites"][wildcards.suite]["steps"]
        inputs = self.checkpoint_job_inputs(_at_step(wildcards, steps[0]))
        inputs["checkpoints"] = list(
            dict.fromkeys(self.checkpoint_input(_at_step(wildcards, s)) for s in steps)
        )
        return inputs

    def size_job_outputs(self, suite: str) -> dict:
        """Every output of the size's checkpoints' jobs, at the same paths."""
        return self.checkpoint_job_outputs(suite, steps=self.config["suites"][suite]["steps"])

    def checkpoint_job_outputs(self, suite: str, steps: list[int] | None = None) -> dict:
        """Everything a checkpoint's job writes, at the same paths as the per-cell jobs.
        Flagged `update`: Snakemake does not delete them before the job reruns (and restores
        them if the rerun fails), so `qid cells` keeps the cells still valid and recomputes the
        others. Quantized models are outputs only with `execution.keep_quantized` (else the job
        deletes each once evaluated); then a rerun copies them aside first (Snakemake's backup
        of updated outputs), which costs disk and time but far less than quantizing again.
        `steps`: those of every checkpoint of a size (a size's job), else the `{step}` wildcard."""
        variants = grid.suite_variants(self.config, suite)
        cell = {"method": [m for m, _ in variants], "bits": [b for _, b in variants]}
        sets = self.eval_sets
        outputs = {
            "base": expand(grid.EVAL, variant=grid.BASE, eval_set=sets, allow_missing=True),
            "records": expand(grid.QUANT_RECORD, zip, **cell, allow_missing=True),
            "evals": [
                p
                for v in (grid.variant(m, b) for m, b in variants)
                for p in expand(grid.EVAL, variant=v, eval_set=sets, allow_missing=True)
            ],
        }
        if self.keep_quantized:
            outputs["models"] = expand(grid.QUANTIZED, zip, **cell, allow_missing=True)
        if steps is not None:
            outputs = {k: expand(v, step=steps, allow_missing=True) for k, v in outputs.items()}
        if "models" in outputs:
            outputs["models"] = [directory(p) for p in outputs["models"]]
        return {name: update(paths) for name, paths in outputs.items()}

    def quantized_output(self, path: str) -> Any:
        """A cell's quantized model: deleted once evaluated unless `execution.keep_quantized`."""
        return directory(path) if self.keep_quantized else temp(directory(path))

    def outside_grid(self, wildcards: Any) -> list:
        """Raise, naming the culprit, for a cell path outside the configured grid."""
        raise WorkflowError(not_in_grid(self.config, wildcards.suite, wildcards.other))

    def eval_set_spec(self, wildcards: Any) -> Mapping:
        spec = self.config["eval_sets"].get(wildcards.eval_set)
        if spec is None:
            raise WorkflowError(
                f"no eval set {wildcards.eval_set!r} in the config "
                f"(eval sets: {', '.join(self.eval_sets)})"
            )
        return spec

    def bitnet_size(self, wildcards: Any) -> dict:
        """A BitNet twin's architecture; fails early, naming the culprit, for a suite/size the
        `bitnet` block does not train."""
        try:
            return grid.bitnet_size(self.config, wildcards.suite, wildcards.size)
        except ValueError as err:
            raise WorkflowError(str(err)) from None
