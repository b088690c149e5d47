rule fit:
    input:
        grid.QID_TABLE,
    output:
        grid.FITS,
    log:
        "logs/fit.log",
    conda:
        "../../envs/qid.yaml"
    params:
        method=config["fit"]["method"],
        eval_set=config["fit"]["eval_set"],
        confidence=config["fit"].get("confidence", 0.95),
        weighting="" if config["fit"].get("weighted", True) else "--unweighted",
    shell:
        "qid fit --table {input} --out {output} --method {params.method}"
        " --eval-set {params.eval_set} --confidence {params.confidence} {params.weighting} > {log} 2>&1"
