rule aggregate:
    input:
        all_evaluations(),
    output:
        grid.QID_TABLE,
    log:
        grid.LOGS["aggregate"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    params:
        config_hash=CONFIG_HASH,
    shell:
        "qid aggregate {input} --out {output} --config-hash {params.config_hash} > {log} 2>&1"
