# One rule per figure, so that each has its own caption in the report (qid.figures.FIGURES,
# a light registry: drawing imports nothing until a job runs).
for fig in FIGURES:

    rule:
        name:
            f"figure_{fig}"
        input:
            **rule_io.figure_inputs(fig),
        output:
            png=report(
                grid.FIGURE.format(name=fig, ext="png"),
                caption=f"../{FIGURES[fig].caption}",
                category="Figures",
            ),
            pdf=grid.FIGURE.format(name=fig, ext="pdf"),
        log:
            grid.LOGS["figure"].format(name=fig),
        conda:
            "../../envs/qid.yaml"
        resources:
            **CPU_PLACEMENT,
            mem_mb=cpu_job("mem_mb"),
            runtime=cpu_job("runtime"),
        params:
            name=fig,
            out_dir=lambda w, output: os.path.dirname(output.png),
            inputs=lambda w, input: figure_args(input),
        shell:
            "qid figures {params.inputs}"
            " --out-dir {params.out_dir} --names {params.name} > {log} 2>&1"
