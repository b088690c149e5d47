import re

from qid.rule_args import as_arg


rule train:
    input:
        train_ids=grid.TRAIN_IDS,
        tokenizer=grid.TOKENIZER,
    output:
        checkpoints=directory(grid.TRAINED),
        log=grid.TRAIN_LOG,
    log:
        grid.LOGS["train"],
    wildcard_constraints:
        suite="|".join(map(re.escape, TRAINED_SUITES)) or "(?!)",
    priority: lambda w: grid.size_priority(config, w.suite, w.size, training=True)
    conda:
        "../../envs/qid.yaml"
    threads: lambda w: config["suites"][w.suite]["sizes"][w.size].get("threads", 1)
    resources:
        **GPU_PLACEMENT,
        mem_mb=gpu_job("mem_mb"),
        runtime=gpu_job("runtime"),
    params:
        seed=config["seed"],
        arch=lambda w: as_arg(config["suites"][w.suite]["sizes"][w.size]),
        training=lambda w: as_arg(config["suites"][w.suite]["training"]),
        steps=lambda w: ",".join(map(str, config["suites"][w.suite]["steps"])),
    shell:
        "qid train --suite {wildcards.suite} --size {wildcards.size} --arch {params.arch}"
        " --training {params.training} --steps {params.steps} --seed {params.seed}"
        " --train-ids {input.train_ids} --tokenizer {input.tokenizer}"
        " --out {output.checkpoints} --log {output.log} --threads {threads} > {log} 2>&1"
