# qid: quantization-induced degradation (QiD) and its scaling laws (Ouyang et al., 2024).
# Thin on purpose: the config, its validation, and one .smk per stage.
from snakemake.utils import min_version

min_version("9.17")  # callable `priority`


# The embedded default, unless a study config is given with --configfile: that one replaces it
# (Snakemake would otherwise merge the two, mixing the default suite into e.g. the Pythia grid).
# Read first to name a missing or malformed file in one line (with the YAML error's line);
# Snakemake's own message names neither. A --configfile is read by Snakemake before this file.
if not workflow.overwrite_configfiles:
    from qid.config import ConfigError, read_config_file

    try:
        read_config_file("config/config.yaml")
    except ConfigError as err:
        raise WorkflowError(f"config error: {err}") from None

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/quantize.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/bitnet.smk"
include: "workflow/rules/figures.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        grid.QID_TABLE,
        # Each result itself, so that a missing one is noticed and regenerated.
        all_evaluations(),
        grid.FITS,
        grid.SUMMARY,
        expand(grid.TABLE1, which=["", "_published"], ext=["md", "csv"]),
        figure_outputs(),
        released_revisions(),
        bitnet_outputs(),
