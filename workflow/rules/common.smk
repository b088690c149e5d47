# Validation, constants and what several stages share (the stage files hold rules only).
import sys

from qid import grid
from qid.config import ConfigError, config_hash, load
from qid.figures import FIGURES

# One clear line naming the culprit, before any job runs; the schema's defaults filled in place,
# by the loader of the `qid` commands.
try:
    load(config)
except ConfigError as err:
    raise WorkflowError(f"config error: {err}") from None


envvars:
    "PATH",


# Rules run the `qid` CLI installed beside this Snakemake, even when its environment is not
# activated (e.g. `.venv/bin/snakemake ...`).
os.environ["PATH"] = os.pathsep.join(
    [os.path.dirname(sys.executable), os.environ["PATH"]]
)
# With `--sdm conda`, envs/qid.post-deploy.sh installs qid from this checkout into the rules'
# env: Snakemake runs a copy of it under .snakemake/conda/, in the working directory (`-d`).
os.environ.update(QID_CHECKOUT=workflow.basedir)

# What several stages share: the config's axes, the resources of a job, the default target.
# The stage files hold rules only (Snakemake's linter wants no functions beside rules): their
# input/output functions are in qid.rule_io, the CLI arguments they build in qid.rule_args,
# paths and the grid's expansion in qid.grid, where unit tests reach them.
from qid.rule_io import RuleIO, calibration_arg, checkpoint_path
from qid.rule_args import eval_settings, figure_args

EVAL_SETS = list(config["eval_sets"])
CONFIG_HASH = config_hash(config)
PER_JOB = config["execution"]["per_job"]
TRAINED_SUITES = grid.trained_suites(config)
FETCHED_SUITES = [s for s in config["suites"] if s not in TRAINED_SUITES]
# Per-cell jobs of a checkpoint (its 16-bit eval and its cells) go to the cluster as one job.
CHECKPOINT_GROUP = "checkpoint" if config["execution"]["group"] else None
EVAL_SETTINGS = eval_settings(config)
# The rules' input and output functions (what a job needs and writes), bound to this config.
rule_io = RuleIO(config)


wildcard_constraints:
    suite=r"[^/]+",
    size=r"[^/]+",
    step=r"\d+",
    method=r"[a-z0-9_]+",
    bits=r"\d+",
    eval_set=r"[^/]+",


RES = config.get("resources", {})


def placement(gpu):
    """SLURM account/partition (and GPUs for the GPU jobs) from the config's `resources`."""
    out = {}
    if RES.get("account"):
        out["slurm_account"] = RES["account"]
    partition = (RES.get("gpu_partition") if gpu else None) or RES.get("partition")
    if partition:
        out["slurm_partition"] = partition
    if gpu and RES.get("gpu", 0):
        out["gpu"] = RES["gpu"]
        if RES.get("gpu_model"):
            out["gpu_model"] = RES["gpu_model"]
    return out


CPU_PLACEMENT = placement(gpu=False)
GPU_PLACEMENT = placement(gpu=True)


def cpu_job(key):
    """mem_mb or runtime of a CPU job, growing with the attempt (a retry asks for more)."""
    base = RES.get("cpu_job", {"mem_mb": 2000, "runtime": 15})[key]
    return lambda wildcards, attempt: base * attempt


def gpu_job(key, jobs=1):
    """mem_mb or runtime of a size's GPU job, from the per-size table, growing with attempt;
    a job doing the work of `jobs` such jobs in series gets `jobs` times the runtime."""

    def resource(wildcards, attempt):
        default = RES.get("gpu_job", {"mem_mb": 4000, "runtime": 30})
        value = RES.get("sizes", {}).get(wildcards.size, default)[key] * attempt
        return value * jobs if key == "runtime" else value

    return resource


# The default target's lists (the Snakefile's rule all; aggregate reads every evaluation).
ALL_EVALUATIONS = grid.evaluations(config)


def all_evaluations():
    """Every eval JSON of the grid (the default target asks for them too: Snakemake reruns no
    job for a missing file whose consumers look up to date)."""
    return ALL_EVALUATIONS


def figure_paths(name):
    return {ext: grid.FIGURE.format(name=name, ext=ext) for ext in ("png", "pdf")}


def figure_outputs():
    return [path for name in FIGURES for path in figure_paths(name).values()]


def released_revisions():
    """Markers of hub revisions deleted from the cache once their cells are done."""
    return grid.released(config)


def bitnet_outputs():
    return expand(grid.BITNET_TABLE, ext=["md", "csv"]) if config.get("bitnet") else []
