# Quantize and evaluate the grid's cells; `execution.per_job` in the config picks the cut.
from qid.quantize import check_bits, get_method
from qid.rules_args import (
    as_arg,
    eval_io,
    not_in_grid,
    rule_id,
    suite_cells,
    suite_options,
)

KEEP_QUANTIZED = config["execution"]["keep_quantized"]


def calibration_arg(wildcards, input):
    """`--calibration PATH` for a job whose inputs hold calibration texts."""
    return f"--calibration {input.calibration}" if "calibration" in input.keys() else ""


def checkpoint_job_inputs(wildcards):
    """A checkpoint's job needs the checkpoint, the eval texts, and calibration if used."""
    inputs = {"checkpoints": checkpoint_input(wildcards), "texts": eval_texts()}
    methods = grid.suite_methods(config, wildcards.suite)
    if any(get_method(m).calibration for m in methods):
        inputs["calibration"] = grid.CALIBRATION
    return inputs


def checkpoint_job_outputs(suite):
    """Everything a checkpoint's job writes, at the same paths as the per-cell jobs. Flagged
    `update`: Snakemake does not delete them before the job reruns (and restores them if
    the rerun fails), so `qid cells` keeps the cells still valid and recomputes the others.
    Quantized models are outputs only with `execution.keep_quantized` (else the job deletes
    each once evaluated); then a rerun copies them aside first (Snakemake's backup of updated
    outputs), which costs disk and time but far less than quantizing again."""
    variants = grid.suite_variants(config, suite)
    cell = {"method": [m for m, _ in variants], "bits": [b for _, b in variants]}
    outputs = {
        "base": expand(
            grid.EVAL, variant=grid.BASE, eval_set=EVAL_SETS, allow_missing=True
        ),
        "records": expand(grid.QUANT_RECORD, zip, **cell, allow_missing=True),
        "evals": [
            p
            for v in (grid.variant(m, b) for m, b in variants)
            for p in expand(
                grid.EVAL, variant=v, eval_set=EVAL_SETS, allow_missing=True
            )
        ],
    }
    if KEEP_QUANTIZED:
        models = expand(grid.QUANTIZED, zip, **cell, allow_missing=True)
        outputs["models"] = [directory(p) for p in models]
    return {name: update(paths) for name, paths in outputs.items()}


def cell_inputs(wildcards):
    """A (method, bits) cell needs its checkpoint, the eval texts, and calibration if used."""
    try:
        check_bits(wildcards.method, int(wildcards.bits))
    except ValueError as err:
        raise WorkflowError(str(err)) from None
    inputs = {
        "checkpoints": checkpoint_input(wildcards),
        "texts": eval_texts(),
        "base": base_evals(wildcards),
    }
    if get_method(wildcards.method).calibration:
        inputs["calibration"] = grid.CALIBRATION
    if CHECKPOINT_GROUP:
        inputs["previous"] = previous_cell(wildcards)
    return inputs


def previous_cell(wildcards):
    """With `execution.group`, a checkpoint's cells run one after another: Snakemake asks a
    group job for the summed resources of the jobs that may run side by side (N cells, N GPUs),
    so chaining them keeps the SLURM job at one cell's GPUs and memory."""
    cell = grid.Cell(checkpoint_of(wildcards), wildcards.method, int(wildcards.bits))
    previous = grid.previous_cell(config, cell)
    return previous.record if previous else []


def quantized_output(path):
    """A cell's quantized model: deleted once evaluated unless `execution.keep_quantized`."""
    return directory(path) if KEEP_QUANTIZED else temp(directory(path))


def outside_grid(wildcards):
    """Raise, naming the culprit, for a cell path outside the configured grid."""
    raise WorkflowError(not_in_grid(config, wildcards.suite, wildcards.other))


if PER_CHECKPOINT:

    # One job per checkpoint: its 16-bit eval, then every cell (quantize, save, reload, evaluate),
    # in one process. A Python process that imports torch and transformers costs ~4.5 s, more
    # than a cell's work on a small model. One rule per suite, since suites may differ in methods.
    # A failing cell is written as failed records and the others go on; a rerun recomputes only
    # what failed or changed (qid.cells).
    for suite in config["suites"]:

        rule:
            name:
                f"checkpoint_{rule_id(suite)}"
            input:
                unpack(checkpoint_job_inputs),
            output:
                **checkpoint_job_outputs(suite),
            log:
                "logs/{suite}/quantize/{size}/step{step}.log",
            wildcard_constraints:
                suite=re.escape(suite),
            conda:
                "../../envs/qid.yaml"
            threads: grid.suite_threads(config, suite)
            resources:
                **GPU_PLACEMENT,
                mem_mb=gpu_job("mem_mb"),
                runtime=gpu_job(
                    "runtime", jobs=len(grid.suite_variants(config, suite)) + 1
                ),
            params:
                checkpoint=checkpoint_path,
                cells=suite_cells(config, suite),
                options=suite_options(config, suite),
                calibration=calibration_arg,
                # Derived from input/output (not a rerun trigger), and inside an existing
                # argument so the shell command, a rerun trigger, reads as before.
                texts=lambda w, input, output: eval_io(input.texts)
                + ("" if "models" in output.keys() else " --drop-quantized"),
                evaluation=EVAL_SETTINGS,
            shell:
                "qid cells --suite {wildcards.suite} --size {wildcards.size}"
                " --step {wildcards.step} --checkpoint {params.checkpoint}"
                " --cells {params.cells} --options {params.options} {params.calibration}"
                " {params.texts} {params.evaluation} --threads {threads} > {log} 2>&1"

    # Any other cell path: one line naming the method or bit width that is not in the grid
    # (the checkpoint rules above only produce the configured cells).
    rule cell_not_in_grid:
        input:
            outside_grid,
        output:
            grid.EVAL.replace("{variant}", "{other}"),
        log:
            "logs/{suite}/not_in_grid/{size}/step{step}/{other}/{eval_set}.log",
        wildcard_constraints:
            other=grid.other_variant(config),
        conda:
            "../../envs/qid.yaml"
        shell:
            "exit 1"

else:

    # One job per grid cell (checkpoint x method x bits): quantize, save, then reload the saved
    # checkpoint and evaluate it on every eval set in the same process. It waits for the 16-bit
    # eval of its checkpoint, which connects a checkpoint's jobs (for `execution.group`).
    rule quantize:
        input:
            unpack(cell_inputs),
        output:
            model=quantized_output(grid.QUANTIZED),
            record=grid.QUANT_RECORD,
            evals=expand(
                grid.EVAL,
                variant=grid.variant("{method}", "{bits}"),
                eval_set=EVAL_SETS,
                allow_missing=True,
            ),
        log:
            "logs/{suite}/quantize/{size}/step{step}/{method}-{bits}bit.log",
        group:
            CHECKPOINT_GROUP
        conda:
            "../../envs/qid.yaml"
        threads: lambda w: config["methods"][w.method].get("threads", 1)
        resources:
            **GPU_PLACEMENT,
            mem_mb=gpu_job("mem_mb"),
            runtime=gpu_job("runtime"),
        params:
            checkpoint=checkpoint_path,
            options=lambda w: as_arg(grid.method_options(config, w.method)),
            calibration=calibration_arg,
            texts=lambda w, input, output: eval_io(
                input.texts, output.evals, "eval-out"
            ),
            evaluation=EVAL_SETTINGS,
        shell:
            "qid quantize --checkpoint {params.checkpoint} --method {wildcards.method}"
            " --bits {wildcards.bits} --out {output.model} --record {output.record}"
            " {params.calibration} --options {params.options} {params.texts} {params.evaluation}"
            " --threads {threads} > {log} 2>&1"
