# Checkpoints not trained here: a hub revision or a local directory, put at the grid's
# checkpoint path by a CPU job, once per checkpoint. Hub revisions are deleted from the HF cache
# once all the checkpoint's cells are evaluated, unless the suite says `keep: true`. The fetch
# job checks every cell of the checkpoint against its architecture (widths, layer types), and
# evaluate.context against its positions, so a cell that cannot work stops the study before any
# evaluation.
import re

from qid.rule_args import as_arg, rule_id, suite_cells, suite_options

for suite in FETCHED_SUITES:
    spec = config["suites"][suite]
    kept = spec["source"] == "local" or spec["keep"]

    rule:
        name:
            f"fetch_{rule_id(suite)}"
        output:
            directory(grid.CHECKPOINT) if kept else temp(directory(grid.CHECKPOINT)),
        log:
            grid.LOGS["fetch"],
        wildcard_constraints:
            suite=re.escape(suite),
        conda:
            "../../envs/qid.yaml"
        resources:
            **CPU_PLACEMENT,
            mem_mb=cpu_job("mem_mb"),
            runtime=cpu_job("runtime"),
        params:
            spec=as_arg(spec),
            cells=suite_cells(config, suite),
            options=suite_options(config, suite),
            context=config["evaluate"]["context"],
        shell:
            "qid fetch --suite {wildcards.suite} --size {wildcards.size} --step {wildcards.step}"
            " --spec {params.spec} --out {output} --cells {params.cells}"
            " --options {params.options} --context {params.context} > {log} 2>&1"

    if not kept:

        rule:
            name:
                f"release_{rule_id(suite)}"
            input:
                checkpoint=grid.CHECKPOINT,
                evals=rule_io.checkpoint_evals,
            output:
                grid.RELEASED,
            log:
                grid.LOGS["release"],
            wildcard_constraints:
                suite=re.escape(suite),
            conda:
                "../../envs/qid.yaml"
            resources:
                **CPU_PLACEMENT,
                mem_mb=cpu_job("mem_mb"),
                runtime=cpu_job("runtime"),
            params:
                cache=f"--cache-dir {spec['cache_dir']}" if spec["cache_dir"] else "",
            shell:
                "qid release --checkpoint {input.checkpoint} {params.cache} --out {output}"
                " > {log} 2>&1"
