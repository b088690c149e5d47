# One job per grid cell (checkpoint x method x bits): quantize, save, then reload the saved
# checkpoint and evaluate it on every eval set in the same process (a Python process that
# imports torch and transformers costs ~3.5 s, more than the work on a small model).
rule quantize:
    input:
        unpack(cell_inputs),
    output:
        model=directory(grid.QUANTIZED),
        record=grid.QUANT_RECORD,
        evals=expand(
            grid.EVAL,
            variant="{method}-{bits}bit",
            eval_set=EVAL_SETS,
            allow_missing=True,
        ),
    log:
        "logs/{suite}/quantize/{size}/step{step}/{method}-{bits}bit.log",
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
        calibration=lambda w, input: (
            f"--calibration {input.calibration}"
            if "calibration" in input.keys()
            else ""
        ),
        evaluation=lambda w, input, output: eval_args(
            input.texts, output.evals, "eval-out"
        ),
    shell:
        "qid quantize --checkpoint {params.checkpoint} --method {wildcards.method}"
        " --bits {wildcards.bits} --out {output.model} --record {output.record}"
        " {params.calibration} --options {params.options} {params.evaluation}"
        " --threads {threads} > {log} 2>&1"
