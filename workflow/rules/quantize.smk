# Quantize and evaluate the grid's cells; `execution.per_job` in the config picks the cut.
import re

from qid.rule_args import (
    as_arg,
    eval_io,
    rule_id,
    suite_cells,
    suite_options,
)

if PER_JOB != "cell":

    # One job per checkpoint (`checkpoint`): its 16-bit eval, then every cell (quantize, save,
    # reload, evaluate), in one process; or one job per model (`size`) doing that for each of its
    # checkpoints in turn. A process that imports torch, transformers, GPTQModel and bitsandbytes
    # costs ~9 s on 2 cores, more than a cell's work on a small model. One rule per suite, since
    # suites may differ in methods. A failing cell is written as failed records and the others go
    # on; a rerun recomputes only what failed or changed (qid.cells).
    PER_SIZE = PER_JOB == "size"
    for suite in config["suites"]:
        steps = config["suites"][suite]["steps"]

        rule:
            name:
                f"{PER_JOB}_{rule_id(suite)}"
            input:
                unpack(
                    rule_io.size_job_inputs
                    if PER_SIZE
                    else rule_io.checkpoint_job_inputs
                ),
            output:
                **(
                    rule_io.size_job_outputs(suite)
                    if PER_SIZE
                    else rule_io.checkpoint_job_outputs(suite)
                ),
            log:
                grid.LOGS[PER_JOB],
            wildcard_constraints:
                suite=re.escape(suite),
            priority: lambda w: grid.size_priority(config, w.suite, w.size)
            conda:
                "../../envs/qid.yaml"
            threads: grid.suite_threads(config, suite)
            resources:
                **GPU_PLACEMENT,
                mem_mb=gpu_job("mem_mb"),
                runtime=gpu_job(
                    "runtime",
                    jobs=(len(grid.suite_variants(config, suite)) + 1)
                    * (len(steps) if PER_SIZE else 1),
                ),
            params:
                # A size's job: every step, at the grid's checkpoint paths; a checkpoint's: its
                # own, named (the shell command, a rerun trigger, reads as it always did).
                step=(
                    ",".join(map(str, steps))
                    if PER_SIZE
                    else lambda w: f"{w.step} --checkpoint {checkpoint_path(w)}"
                ),
                cells=suite_cells(config, suite),
                options=suite_options(config, suite),
                calibration=calibration_arg,
                # Derived from input/output (not a rerun trigger), and inside an existing
                # argument so the shell command, a rerun trigger, reads as before.
                texts=lambda w, input, output: eval_io(input.texts)
                + ("" if "models" in output.keys() else " --drop-quantized"),
                evaluation=EVAL_SETTINGS,
            shell:
                "qid cells --suite {wildcards.suite} --size {wildcards.size} --step {params.step}"
                " --cells {params.cells} --options {params.options} {params.calibration}"
                " {params.texts} {params.evaluation} --threads {threads} > {log} 2>&1"


if PER_JOB != "cell":

    # Any other cell path: one line naming the method or bit width that is not in the grid
    # (the checkpoint or size rules above only produce the configured cells).
    rule cell_not_in_grid:
        input:
            rule_io.outside_grid,
        output:
            grid.EVAL.replace("{variant}", "{other}"),
        log:
            grid.LOGS["cell_not_in_grid"],
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
            unpack(rule_io.cell_inputs),
        output:
            model=rule_io.quantized_output(grid.QUANTIZED),
            record=grid.QUANT_RECORD,
            evals=expand(
                grid.EVAL,
                variant=grid.variant("{method}", "{bits}"),
                eval_set=EVAL_SETS,
                allow_missing=True,
            ),
        log:
            grid.LOGS["quantize"],
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
