# Validation and input functions shared by the stages.
import json
import re
import shlex
import sys

from qid import grid
from qid.config import ConfigError, config_hash, load
from qid.figures import FIGURES
from qid.quantize import check_bits, get_method

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

EVAL_SETS = list(config["eval_sets"])
CONFIG_HASH = config_hash(config)
PER_CHECKPOINT = config["execution"]["per_job"] == "checkpoint"
TRAINED_SUITES = [
    s for s, spec in config["suites"].items() if spec["source"] == "train"
]
FETCHED_SUITES = [s for s in config["suites"] if s not in TRAINED_SUITES]
# Per-cell jobs of a checkpoint (its 16-bit eval and its cells) go to the cluster as one job.
CHECKPOINT_GROUP = "checkpoint" if config["execution"]["group"] else None


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


def as_arg(obj):
    """A config block as one shell-quoted JSON argument of the qid CLI. Keys sorted: params
    are Snakemake's rerun trigger, and a config's key order or formatting changes no result.
    """
    return shlex.quote(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def suite_cells(suite):
    """`--cells` of a suite's checkpoints: method:bits,... (in grid.suite_variants' canonical
    order)."""
    return ",".join(f"{m}:{b}" for m, b in grid.suite_variants(config, suite))


def suite_options(suite):
    """`--options` of a suite's checkpoints: each method's options, as one JSON argument."""
    return as_arg(
        {m: grid.method_options(config, m) for m in grid.suite_methods(config, suite)}
    )


def checkpoint_input(wildcards):
    """What a checkpoint's jobs wait for: the training job that writes all its steps."""
    suite = config["suites"].get(wildcards.suite)
    if suite is None or wildcards.size not in suite["sizes"]:
        raise WorkflowError(
            f"no suite/size {wildcards.suite}/{wildcards.size} in the config "
            f"(suites: {', '.join(config['suites'])})"
        )
    if int(wildcards.step) not in suite["steps"]:
        raise WorkflowError(
            f"step {wildcards.step} is not a checkpoint of suite {wildcards.suite} "
            f"(steps: {suite['steps']})"
        )
    if suite["source"] != "train":
        return checkpoint_path(wildcards)
    return grid.TRAINED.format(suite=wildcards.suite, size=wildcards.size)


def checkpoint_path(wildcards):
    return grid.CHECKPOINT.format(
        suite=wildcards.suite, size=wildcards.size, step=wildcards.step
    )


EVAL_TEXTS = expand(grid.EVAL_TEXTS, eval_set=EVAL_SETS)


def eval_texts():
    # Built once: input functions run per job (benchmarks/dryrun_scaling.py profiles them).
    return EVAL_TEXTS


def eval_io(texts, outs=None, flag=None):
    """`--texts A [--<flag> A.json] ...`: paths only (a derived param, not a rerun trigger)."""
    if outs is None:
        return " ".join(f"--texts {t}" for t in texts)
    return " ".join(f"--texts {t} --{flag} {o}" for t, o in zip(texts, outs))


def eval_settings():
    """The evaluation settings from the config, as arguments. Every rule that evaluates takes
    them as a plain params value, computed from the config alone: Snakemake leaves params
    computed from `input`/`output` out of its rerun trigger."""
    ev = config["evaluate"]
    args = [
        f"--context {ev['context']}",
        f"--batch-tokens {ev['batch_tokens']}",
        f"--dtype {ev.get('dtype', 'auto')}",
    ]
    if ev.get("fake_quant"):
        args.append("--fake-quant")
    if ev.get("reference_tokenizer"):
        args.append(f"--reference-tokenizer {shlex.quote(ev['reference_tokenizer'])}")
    return " ".join(args)


EVAL_SETTINGS = eval_settings()


def cell_inputs(wildcards):
    """A (method, bits) cell needs its checkpoint, the eval texts, and calibration if used."""
    try:
        check_bits(wildcards.method, int(wildcards.bits))
    except ValueError as err:
        raise WorkflowError(str(err)) from None
    inputs = {
        "checkpoints": checkpoint_input(wildcards),
        "texts": eval_texts(),
        "base": base_evals(wildcards),
    }
    if get_method(wildcards.method).calibration:
        inputs["calibration"] = grid.CALIBRATION
    if CHECKPOINT_GROUP:
        inputs["previous"] = previous_cell(wildcards)
    return inputs


def checkpoint_of(wildcards):
    return grid.Checkpoint(wildcards.suite, wildcards.size, int(wildcards.step))


def calibration_arg(wildcards, input):
    """`--calibration PATH` for a job whose inputs hold calibration texts."""
    return f"--calibration {input.calibration}" if "calibration" in input.keys() else ""


def previous_cell(wildcards):
    """With `execution.group`, a checkpoint's cells run one after another: Snakemake asks a
    group job for the summed resources of the jobs that may run side by side (N cells, N GPUs),
    so chaining them keeps the SLURM job at one cell's GPUs and memory."""
    variants = grid.suite_variants(config, wildcards.suite)
    i = variants.index((wildcards.method, int(wildcards.bits)))
    if i == 0:
        return []
    return grid.Cell(checkpoint_of(wildcards), *variants[i - 1]).record


def base_evals(wildcards):
    return [checkpoint_of(wildcards).eval_path(grid.BASE, e) for e in EVAL_SETS]


def rule_id(name):
    """A rule name from a suite name (which may hold '-' or '.')."""
    return re.sub(r"\W", "_", name)


def checkpoint_job_inputs(wildcards):
    """A checkpoint's job needs the checkpoint, the eval texts, and calibration if used."""
    inputs = {"checkpoints": checkpoint_input(wildcards), "texts": eval_texts()}
    methods = grid.suite_methods(config, wildcards.suite)
    if any(get_method(m).calibration for m in methods):
        inputs["calibration"] = grid.CALIBRATION
    return inputs


KEEP_QUANTIZED = config["execution"]["keep_quantized"]


def quantized_output(path):
    """A cell's quantized model: deleted once evaluated unless `execution.keep_quantized`."""
    return directory(path) if KEEP_QUANTIZED else temp(directory(path))


# A variant directory that is neither the 16-bit baseline nor a configured cell.
OTHER_VARIANT = "(?!(?:{})/)[^/]+".format(
    "|".join(
        re.escape(v)
        for v in {grid.BASE}
        | {
            grid.variant(m, b)
            for s in config["suites"]
            for m, b in grid.suite_variants(config, s)
        }
    )
)


def not_in_grid(wildcards):
    """Raise, naming the culprit, for a cell path outside the configured grid."""
    cell = grid.parse_variant(wildcards.other)
    if cell is None:
        raise WorkflowError(
            f"{wildcards.other!r} is not a cell: expected <method>-<bits>bit"
        )
    method, bits = cell
    try:
        check_bits(method, bits)
    except ValueError as err:
        raise WorkflowError(str(err)) from None
    raise WorkflowError(
        f"cell {wildcards.other} is not in the grid of suite {wildcards.suite}: "
        f"configure {method} with {bits} bits under `methods`"
    )


def suite_threads(suite):
    return max(
        config["methods"][m].get("threads", 1)
        for m in grid.suite_methods(config, suite)
    )


def checkpoint_job_outputs(suite):
    """Everything a checkpoint's job writes, at the same paths as the per-cell jobs. Flagged
    `update`: Snakemake does not delete them before the job reruns (and restores them if
    the rerun fails), so `qid cells` keeps the cells still valid and recomputes the others. Quantized models
    are outputs only with `execution.keep_quantized` (else the job deletes each once
    evaluated); then a rerun copies them aside first (Snakemake's backup of updated outputs),
    which costs disk and time but far less than quantizing again."""
    variants = grid.suite_variants(config, suite)
    cell = {"method": [m for m, _ in variants], "bits": [b for _, b in variants]}
    outputs = {
        "base": expand(
            grid.EVAL, variant=grid.BASE, eval_set=EVAL_SETS, allow_missing=True
        ),
        "records": expand(grid.QUANT_RECORD, zip, **cell, allow_missing=True),
        "evals": [
            p
            for v in (grid.variant(m, b) for m, b in variants)
            for p in expand(
                grid.EVAL, variant=v, eval_set=EVAL_SETS, allow_missing=True
            )
        ],
    }
    if KEEP_QUANTIZED:
        models = expand(grid.QUANTIZED, zip, **cell, allow_missing=True)
        outputs["models"] = [directory(p) for p in models]
    return {name: update(paths) for name, paths in outputs.items()}


def checkpoint_evals(wildcards):
    """Every evaluation of one checkpoint: the 16-bit model's and its cells'."""
    ckpt = checkpoint_of(wildcards)
    cells = [
        grid.Cell(ckpt, m, b).eval_path(e)
        for m, b in grid.suite_variants(config, ckpt.suite)
        for e in EVAL_SETS
    ]
    return base_evals(wildcards) + cells


def released_revisions():
    """Markers of hub revisions deleted from the cache once their cells are done."""
    return [
        grid.RELEASED.format(suite=c.suite, size=c.size, step=c.step)
        for c in grid.checkpoints(config)
        if config["suites"][c.suite]["source"] == "hub"
        and not config["suites"][c.suite]["keep"]
    ]


def all_evaluations():
    """Every eval JSON of the grid (the default target asks for them too: Snakemake reruns no
    job for a missing file whose consumers look up to date)."""
    base = {
        c.eval_path(grid.BASE, e) for c in grid.checkpoints(config) for e in EVAL_SETS
    }
    cells = {cell.eval_path(e) for cell in grid.cells(config) for e in EVAL_SETS}
    return sorted(base | cells)


def figure_outputs():
    return expand(grid.FIGURE, name=FIGURES, ext=["png", "pdf"])


# Data rules (data.smk).
from qid.sources import needs_corpus_split

CORPUS_KEYS = ("corpus", "heldout_fraction")


def corpus_arg(spec):
    """`--data ...` for a source built from the training corpus's seeded split, else nothing:
    a set that does not use the corpus is not rebuilt when the corpus settings change.
    """
    if not needs_corpus_split(spec):
        return ""
    return f"--data {as_arg({k: config['data'].get(k) for k in CORPUS_KEYS})}"


def eval_set_spec(wildcards):
    spec = config["eval_sets"].get(wildcards.eval_set)
    if spec is None:
        raise WorkflowError(
            f"no eval set {wildcards.eval_set!r} in the config "
            f"(eval sets: {', '.join(EVAL_SETS)})"
        )
    return spec


def source_files(spec):
    """A `file` source's file, so Snakemake names it when missing and reruns when it changes."""
    return [spec["path"]] if spec.get("source") == "file" else []
