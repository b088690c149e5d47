# Sec. 4.4 / Fig. 14: BitNet b1.58 twins of some of a suite's models (config `bitnet`); paths
# in qid.grid.
from qid.rule_args import as_arg, bitnet_training, eval_io


rule train_bitnet:
    input:
        train_ids=grid.TRAIN_IDS,
        tokenizer=grid.TOKENIZER,
    output:
        checkpoints=directory(grid.BITNET_TRAINED),
        log=grid.BITNET_TRAIN_LOG,
    log:
        grid.LOGS["train_bitnet"],
    priority: lambda w: grid.size_priority(config, w.suite, w.size, training=True)
    conda:
        "../../envs/qid.yaml"
    threads: lambda w: rule_io.bitnet_size(w).get("threads", 1)
    resources:
        **GPU_PLACEMENT,
        mem_mb=gpu_job("mem_mb"),
        runtime=gpu_job("runtime"),
    params:
        seed=config["seed"],
        arch=lambda w: as_arg(rule_io.bitnet_size(w)),
        training=lambda w: as_arg(bitnet_training(config, w.suite)),
        steps=lambda w: ",".join(map(str, config["suites"][w.suite]["steps"])),
    shell:
        "qid train --bitnet --suite {wildcards.suite} --size {wildcards.size}"
        " --arch {params.arch} --training {params.training} --steps {params.steps}"
        " --seed {params.seed} --train-ids {input.train_ids} --tokenizer {input.tokenizer}"
        " --out {output.checkpoints} --log {output.log} --threads {threads} > {log} 2>&1"


# The same evaluator as every other model (qid evaluate rebuilds the BitLinears on load).
rule evaluate_bitnet:
    input:
        checkpoints=grid.BITNET_TRAINED,
        texts=rule_io.eval_texts,
    output:
        evals=expand(grid.BITNET_EVAL, eval_set=EVAL_SETS, allow_missing=True),
    log:
        grid.LOGS["evaluate_bitnet"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **GPU_PLACEMENT,
        mem_mb=gpu_job("mem_mb"),
        runtime=gpu_job("runtime"),
    params:
        checkpoint=lambda w, input: f"{input.checkpoints}/step{w.step}",
        texts=lambda w, input, output: eval_io(input.texts, output.evals, "out"),
        evaluation=EVAL_SETTINGS,
    shell:
        "qid evaluate --checkpoint {params.checkpoint} {params.texts} {params.evaluation}"
        " --threads {threads} > {log} 2>&1"


rule bitnet_table:
    input:
        evals=grid.bitnet_evals(config),
        table=grid.QID_TABLE,
    output:
        md=expand(grid.BITNET_TABLE, ext="md"),
        csv=report(
            expand(grid.BITNET_TABLE, ext="csv")[0],
            caption="../report/bitnet.rst",
            category="Tables",
        ),
    log:
        grid.LOGS["bitnet_table"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    shell:
        "qid bitnet {input.evals} --table {input.table} --bits 2"
        " --out-md {output.md} --out-csv {output.csv} > {log} 2>&1"
