from qid.rule_args import fit_options


rule fit:
    input:
        grid.QID_TABLE,
    output:
        grid.FITS,
    log:
        grid.LOGS["fit"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    params:
        method=config["fit"]["method"],
        eval_set=config["fit"]["eval_set"],
        options=fit_options(config),
    shell:
        "qid fit --table {input} --out {output} --method {params.method}"
        " --eval-set {params.eval_set} {params.options} > {log} 2>&1"


rule table1:
    input:
        grid.FITS,
    output:
        md=expand(grid.TABLE1, which="", ext="md"),
        csv=report(
            expand(grid.TABLE1, which="", ext="csv")[0],
            caption="../report/table1.rst",
            category="Tables",
        ),
        published_md=expand(grid.TABLE1, which="_published", ext="md"),
        published_csv=report(
            expand(grid.TABLE1, which="_published", ext="csv")[0],
            caption="../report/table1_published.rst",
            category="Tables",
        ),
    log:
        grid.LOGS["table1"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    shell:
        "(qid table1 --fits {input} --by-bits --out-md {output.md} --out-csv {output.csv}"
        " && qid table1 --out-md {output.published_md} --out-csv {output.published_csv})"
        " > {log} 2>&1"


rule summary:
    input:
        grid.FITS,
    output:
        report(grid.SUMMARY, caption="../report/summary.rst", category="Tables"),
    log:
        grid.LOGS["summary"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    shell:
        "qid summary --fits {input} --out {output} > {log} 2>&1"
