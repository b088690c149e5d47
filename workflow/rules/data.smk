rule data:
    output:
        tokenizer=directory(grid.TOKENIZER),
        train_ids=grid.TRAIN_IDS,
        calibration=grid.CALIBRATION,
        texts=expand(grid.EVAL_TEXTS, eval_set=EVAL_SETS),
    log:
        "logs/data.log",
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    params:
        seed=config["seed"],
        data=as_arg(config["data"]),
        eval_sets=as_arg(config["eval_sets"]),
        eval_dir=lambda wildcards, output: os.path.dirname(output.texts[0]),
    shell:
        "qid data --seed {params.seed} --data {params.data} --eval-sets {params.eval_sets}"
        " --tokenizer {output.tokenizer} --train-ids {output.train_ids}"
        " --calibration {output.calibration} --eval-dir {params.eval_dir} > {log} 2>&1"
