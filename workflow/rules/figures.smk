# Every figure in one job: a `qid figures` process takes longer to start (~2.5 s on 2 cores)
# than most figures take to draw, and there are 16. Each figure is still a target of its own
# (ask Snakemake for its path) with its own caption in the report (qid.figures.FIGURES, a light
# registry: drawing imports nothing until the job runs).
rule figures:
    input:
        **rule_io.all_figure_inputs(),
    output:
        **{
            f"{fig}_{ext}": (
                report(path, caption=f"../{FIGURES[fig].caption}", category="Figures")
                if ext == "png"
                else path
            )
            for fig in FIGURES
            for ext, path in figure_paths(fig).items()
        },
    log:
        grid.LOGS["figures"],
    conda:
        "../../envs/qid.yaml"
    resources:
        **CPU_PLACEMENT,
        mem_mb=cpu_job("mem_mb"),
        runtime=cpu_job("runtime"),
    params:
        names=" ".join(FIGURES),
        out_dir=lambda w, output: os.path.dirname(output[0]),
        inputs=lambda w, input: figure_args(input),
    shell:
        "qid figures {params.inputs}"
        " --out-dir {params.out_dir} --names {params.names} > {log} 2>&1"
