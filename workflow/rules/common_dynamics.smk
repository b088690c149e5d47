# Paths and input functions of the training-dynamics rules (weights.smk, bitnet.smk) and of
# the figures that draw from their outputs (Figs. 12 and 14, figures.smk).
from qid.figures import DATA

# Fig. 12: weight change between consecutive checkpoints (weights.smk), one job per suite.
WEIGHT_CHANGES = f"{grid.RESULTS}/{{suite}}/weights/changes.parquet"
WEIGHT_SAMPLES = f"{grid.RESULTS}/{{suite}}/weights/samples.parquet"

# Sec. 4.4 / Fig. 14: BitNet b1.58 twins of some of a suite's models (config `bitnet`, bitnet.smk),
# trained on the same data, seed, init and token budget. The 16-bit twins are the suite's own
# models and training logs, so only the BitNet models train.
BITNET = config.get("bitnet")
BITNET_DIR = f"{grid.RESULTS}/{{suite}}/bitnet"
BITNET_TRAINED = f"{BITNET_DIR}/checkpoints/{{size}}"
BITNET_TRAIN_LOG = f"{BITNET_DIR}/train/{{size}}.parquet"
BITNET_EVAL = f"{BITNET_DIR}/eval/{{size}}/step{{step}}/{{eval_set}}.json"
BITNET_TABLE = f"{grid.RESULTS}/bitnet.{{ext}}"


def bitnet_training(suite):
    """The twin's training recipe with BitNet's own learning-rate keys over it."""
    return {**config["suites"][suite]["training"], **BITNET.get("training", {})}


def bitnet_evals():
    """The final BitNet checkpoints' evaluations, every eval set."""
    if not BITNET:
        return []
    last = config["suites"][BITNET["suite"]]["steps"][-1]
    return expand(
        BITNET_EVAL,
        suite=BITNET["suite"],
        size=BITNET["sizes"],
        step=last,
        eval_set=EVAL_SETS,
    )


def bitnet_train_logs():
    """Training logs of the BitNet models and of their 16-bit twins (Fig. 14)."""
    if not BITNET:
        return []
    names = dict(suite=BITNET["suite"], size=BITNET["sizes"])
    return expand(BITNET_TRAIN_LOG, **names) + expand(grid.TRAIN_LOG, **names)


def bitnet_outputs():
    return expand(BITNET_TABLE, ext=["md", "csv"]) if BITNET else []


def bitnet_size(wildcards):
    """Fail early, naming the culprit, for a suite/size the `bitnet` block does not train."""
    if not BITNET or (wildcards.suite, wildcards.size) not in {
        (BITNET["suite"], s) for s in BITNET["sizes"]
    }:
        raise WorkflowError(
            f"no BitNet twin of {wildcards.suite}/{wildcards.size} in the config's `bitnet` block"
        )
    return config["suites"][wildcards.suite]["sizes"][wildcards.size]


# Figs. 12 and 14 draw from other tables than the QiD table and the fits (qid.figures.DATA).
# Fig. 12 reads every checkpoint of a suite at once: trained suites only (a hub suite's revisions
# are deleted from the cache as its cells finish).
FIGURE_DATA = {
    "weight_changes": expand(WEIGHT_CHANGES, suite=TRAINED_SUITES),
    "weight_samples": expand(WEIGHT_SAMPLES, suite=TRAINED_SUITES),
    "train": bitnet_train_logs(),
}


def figure_inputs(fig):
    if fig in DATA:
        return {key: FIGURE_DATA[key] for key in DATA[fig]}
    return {"table": grid.QID_TABLE, "fits": grid.FITS}


def figure_args(input):
    """`--table T --fits F`, or `--data KEY=PATH` per file of the other tables."""
    args = []
    for key in input.keys():
        paths = [input[key]] if isinstance(input[key], str) else list(input[key])
        if key in ("table", "fits"):
            args += [f"--{key} {p}" for p in paths]
        else:
            args += [f"--data {key}={p}" for p in paths]
    return " ".join(args)
