"""The arguments the workflow's rules pass to the `qid` CLI, built from the config.

Rule params are Snakemake's rerun trigger: each string here must stay the same for the same
config (keys sorted, the config's key order or formatting changing nothing), or every job reruns.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping

from qid import grid
from qid.config import schema_key

CORPUS_KEYS = ("corpus", "heldout_fraction")  # the settings of the corpus's seeded split


def as_arg(obj: object) -> str:
    """A config block as one shell-quoted JSON argument of the qid CLI (keys sorted)."""
    return shlex.quote(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def rule_id(name: str) -> str:
    """A rule name from a suite name (which may hold '-' or '.')."""
    return re.sub(r"\W", "_", name)


def suite_cells(config: dict, suite: str) -> str:
    """`--cells` of a suite's checkpoints: method:bits,... (in grid.suite_variants' order)."""
    return ",".join(f"{m}:{b}" for m, b in grid.suite_variants(config, suite))


def suite_options(config: dict, suite: str) -> str:
    """`--options` of a suite's checkpoints: each method's options, as one JSON argument."""
    return as_arg({m: grid.method_options(config, m) for m in grid.suite_methods(config, suite)})


def eval_io(texts: Iterable[str], outs: Iterable[str] | None = None, flag: str = "") -> str:
    """`--texts A [--<flag> A.json] ...`: paths only (a derived param, not a rerun trigger)."""
    if outs is None:
        return " ".join(f"--texts {t}" for t in texts)
    return " ".join(f"--texts {t} --{flag} {o}" for t, o in zip(texts, outs, strict=True))


def eval_settings(config: dict) -> str:
    """The evaluation settings as arguments. Every rule that evaluates takes them as a plain
    params value, computed from the config alone: Snakemake leaves params computed from
    `input`/`output` out of its rerun trigger."""
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


def corpus_arg(config: dict, spec: dict) -> str:
    """`--data ...` for a source built from the training corpus's seeded split, else nothing:
    a set that does not use the corpus is not rebuilt when the corpus settings change."""
    from qid.sources import needs_corpus_split

    if not needs_corpus_split(spec):
        return ""
    return f"--data {as_arg({k: config['data'].get(k) for k in CORPUS_KEYS})}"


def source_files(spec: dict) -> list[str]:
    """A `file` source's file, so Snakemake names it when missing and reruns when it changes."""
    return [spec["path"]] if spec.get("source") == "file" else []


def fit_options(config: dict) -> str:
    """`qid fit`'s options beyond its table, method and eval set."""
    fit = config["fit"]
    options = " ".join(
        [
            f"--confidence {fit.get('confidence', 0.95)}",
            f"--loss {fit.get('loss', 'linear')}",
            f"--bootstrap {fit.get('bootstrap', 1000)} --seed {config['seed']}",
            "--validate" if fit.get("validate", True) else "",
            "" if fit.get("weighted", True) else "--unweighted",
            f"--likelihood {fit.get('likelihood', schema_key('fit', 'likelihood')['default'])}",
        ]
    )
    return options


def bitnet_training(config: dict, suite: str) -> dict:
    """A BitNet twin's training recipe: its suite's, with BitNet's learning-rate keys over it."""
    return {**config["suites"][suite]["training"], **config["bitnet"].get("training", {})}


def not_in_grid(config: dict, suite: str, other: str) -> str:
    """Why the cell path `other` of `suite` cannot be made, in one line naming the culprit."""
    from qid.quantize import check_bits

    cell = grid.parse_variant(other)
    if cell is None:
        return f"{other!r} is not a cell: expected <method>-<bits>bit"
    method, bits = cell
    try:
        check_bits(method, bits)
    except ValueError as err:
        return str(err)
    return (
        f"cell {other} is not in the grid of suite {suite}: "
        f"configure {method} with {bits} bits under `methods`"
    )


def figure_args(input: Mapping[str, str | Iterable[str]]) -> str:
    """`--table T --fits F`, or `--data KEY=PATH` per file of the other tables."""
    args = []
    for key in input.keys():
        paths = [input[key]] if isinstance(input[key], str) else list(input[key])
        if key in ("table", "fits"):
            args += [f"--{key} {p}" for p in paths]
        else:
            args += [f"--data {key}={p}" for p in paths]
    return " ".join(args)
