# The 16-bit baseline: once per checkpoint, on every eval set, shared by all cells (with
# `execution.per_job: checkpoint` or `size` the checkpoint's or size's job does it, see
# quantize.smk).
from qid.rule_args import eval_io

if PER_JOB == "cell":

    rule evaluate_base:
        input:
            checkpoints=rule_io.checkpoint_input,
            texts=rule_io.eval_texts,
        output:
            evals=expand(
                grid.EVAL, variant=grid.BASE, eval_set=EVAL_SETS, allow_missing=True
            ),
        log:
            grid.LOGS["evaluate_base"],
        group:
            CHECKPOINT_GROUP
        conda:
            "../../envs/qid.yaml"
        resources:
            **GPU_PLACEMENT,
            mem_mb=gpu_job("mem_mb"),
            runtime=gpu_job("runtime"),
        params:
            checkpoint=checkpoint_path,
            texts=lambda w, input, output: eval_io(input.texts, output.evals, "out"),
            evaluation=EVAL_SETTINGS,
        shell:
            "qid evaluate --checkpoint {params.checkpoint} {params.texts} {params.evaluation}"
            " --threads {threads} > {log} 2>&1"
