# Fig. 12: how much the weights move between consecutive checkpoints, per layer type, read from
# every size's saved checkpoints; one job per suite (paths in qid.grid).
rule weights:
    input:
        lambda w: expand(
            grid.TRAINED, suite=w.suite, size=config["suites"][w.suite]["sizes"]
        ),
    output:
        changes=grid.WEIGHT_CHANGES,
        samples=grid.WEIGHT_SAMPLES,
    log:
        grid.LOGS["weights"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    params:
        seed=config["seed"],
    shell:
        "qid weights {input} --changes {output.changes} --samples {output.samples}"
        " --sample 8 --seed {params.seed} > {log} 2>&1"
