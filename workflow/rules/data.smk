# One rule per data product, so a study builds only what it uses: the training corpus only when
# a suite is trained here (its outputs are the train rule's inputs), each eval set on its own
# (changing one resamples only it), calibration only when a method calibrates.
from qid.rule_args import CORPUS_KEYS, as_arg, corpus_arg, source_files


rule corpus:
    output:
        tokenizer=directory(grid.TOKENIZER),
        train_ids=grid.TRAIN_IDS,
    log:
        grid.LOGS["corpus"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    params:
        seed=config["seed"],
        data=as_arg({k: config["data"].get(k) for k in (*CORPUS_KEYS, "tokenizer")}),
    shell:
        "qid corpus --seed {params.seed} --data {params.data}"
        " --tokenizer {output.tokenizer} --train-ids {output.train_ids} > {log} 2>&1"


rule eval_set:
    input:
        lambda w: source_files(rule_io.eval_set_spec(w)),
    output:
        grid.EVAL_TEXTS,
    log:
        grid.LOGS["eval_set"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    params:
        seed=config["seed"],
        spec=lambda w: as_arg(rule_io.eval_set_spec(w)),
        corpus=lambda w: corpus_arg(config, rule_io.eval_set_spec(w)),
    shell:
        "qid evalset --name {wildcards.eval_set} --seed {params.seed} --spec {params.spec}"
        " {params.corpus} --out {output} > {log} 2>&1"


rule calibration:
    input:
        source_files(config["data"]["calibration"]),
    output:
        grid.CALIBRATION,
    log:
        grid.LOGS["calibration"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    params:
        seed=config["seed"],
        spec=as_arg(config["data"]["calibration"]),
        corpus=corpus_arg(config, config["data"]["calibration"]),
    shell:
        "qid calibration --seed {params.seed} --spec {params.spec} {params.corpus}"
        " --out {output} > {log} 2>&1"
