"""The inputs of `qid diagnose --checkpoint`, checked before any weights load (`prepare`): the
methods, bit widths and each method's options, the checkpoint, the texts, and the calibration
texts (given, or of the size each method's library recommends, cut from an offline source).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qid import QidError
from qid.checkpoints import open_checkpoint
from qid.data import check_texts, read_table

CALIBRATION_SOURCE = "wiki_offline"  # Wikipedia lead sections: the Wikitext-2 role, offline


@dataclass
class Plan:
    """A checked measurement: the cells with the options their backends get, and calibration."""

    checkpoint: Path
    texts: Path
    cells: list[tuple[str, int, dict]]
    calibration: dict[str, list[str]] = field(default_factory=dict)  # method -> texts
    calibration_info: dict[str, dict] = field(default_factory=dict)  # method -> what was used
    warnings: list[str] = field(default_factory=list)


def given_per_method(options: dict) -> bool:
    """Whether `--options` holds an object per method ({"rtn": {...}, "gptq": {...}}: every
    value an object) rather than one object for all methods."""
    return bool(options) and all(isinstance(v, dict) for v in options.values())


def split_options(options: dict, methods: list[str]) -> dict[str, dict]:
    """Each method's options from `--options`: one object for all methods, or an object per
    method."""
    from qid.quantize import get_method

    if given_per_method(options):
        for name in options:
            try:
                get_method(name)
            except QidError as err:  # a misspelled method key, named
                raise QidError(f"--options: {err}") from None
        missing = [m for m in methods if m not in options]
        if missing:
            raise QidError(
                f"--options gives options per method but none for {missing[0]!r} "
                f"(it has: {', '.join(options)})"
            )
        return {m: dict(options[m]) for m in methods}
    return {m: dict(options) for m in methods}


def check_options(method: str, bits: int, options: dict, shared: bool = False) -> None:
    """Refuse (one line naming the option) what the config schema refuses in `method`'s block:
    a misspelled option must not quietly fall back to the backend's default. Options `shared`
    by every method of the run may hold any method's options (gptq's damp_percent beside rtn)."""
    from qid.config import load_schema, method_schema, schema_problem

    root = load_schema()
    methods = root["properties"]["methods"]
    node = methods["additionalProperties"] if shared else method_schema(method)
    problem = schema_problem({**options, "bits": [bits]}, node, root)
    if problem is None:
        return
    if problem.unknown is not None:
        raise QidError(
            f"--options for method {method!r}: option {problem.unknown!r} is not known "
            f"(misspelled? known: {', '.join(k for k in problem.allowed if k != 'bits')})"
        )
    where = ".".join(str(p) for p in problem.path)
    raise QidError(f"--options for method {method!r}: option {where!r}: {problem.message}")


def default_calibration(
    method: str, seed: int = 0, pool: list[str] | None = None
) -> tuple[list[str], dict]:
    """Calibration texts of the size the method's library recommends, cut from a generic source
    available offline (`pool`, else Wikipedia lead sections: the Wikitext-2 role, as in the
    grid's `wiki_offline` calibration), and a record of what was used.

    Random windows of ~`length` tokens of the texts joined, as `qid calibration` cuts them
    (GPTQ's Wikitext-2 recipe); a source too short for that many gives its disjoint windows,
    fewer than recommended, and says so."""
    from qid.quantize import get_method
    from qid.texts import CHARS_PER_TOKEN, calibration_windows, select_texts

    recommended = get_method(method).recommended
    if recommended is None:
        raise QidError(f"method {method!r} takes no calibration")
    source = "given texts" if pool is not None else CALIBRATION_SOURCE
    if pool is None:
        where = f"calibration of qid diagnose (source {CALIBRATION_SOURCE})"
        pool = select_texts(where, {"source": CALIBRATION_SOURCE}, "all", seed)["text"].tolist()
    chars = CHARS_PER_TOKEN * recommended.length
    joined = "\n\n".join(pool)
    info = {
        "source": source,
        "texts": recommended.n_texts,
        "length": recommended.length,
        "recommended": {"texts": recommended.n_texts, "length": recommended.length},
    }
    if len(joined) > recommended.n_texts * chars:
        return calibration_windows(pool, recommended.n_texts, chars, seed), info
    # Too short for the recommended windows: all of it, in disjoint windows (one if shorter).
    texts = [joined[i : i + chars] for i in range(0, len(joined), chars)]
    info |= {
        "texts": len(texts),
        "length": min(recommended.length, len(texts[0]) // CHARS_PER_TOKEN),
        "note": (
            f"{source} holds ~{len(joined) // CHARS_PER_TOKEN:,} tokens, fewer than the "
            f"{recommended.n_texts} x {recommended.length} recommended: all of it is used"
        ),
    }
    return texts, info


def _given_calibration(path: Path, checkpoint: Path, methods: list[str]) -> tuple[list, dict, list]:
    """The texts of a --calibration parquet, their size in the checkpoint's tokens, and a
    warning for each method whose library recommends more."""
    from transformers import AutoTokenizer

    from qid.quantize import get_method

    check_texts(path, "--calibration")
    texts = read_table(path, "--calibration", ["text"])["text"].fillna("").astype(str).tolist()
    tokens = [len(ids) for ids in AutoTokenizer.from_pretrained(checkpoint)(texts)["input_ids"]]
    median = int(np.median(tokens))
    warnings = []
    for method in methods:
        r = get_method(method).recommended
        if r is not None and (len(texts) < r.n_texts or median < r.length):
            warnings.append(
                f"--calibration {str(path)!r} holds {len(texts)} texts of {median} tokens "
                f"(median), less than {method}'s library recommends ({r.n_texts} x "
                f"{r.length}): the quantization may be worse than {method} can do"
            )
    info = {"source": str(path), "texts": len(texts), "length": median}
    return texts, info, warnings


def prepare(
    checkpoint: Path,
    texts: Path,
    methods: list[str],
    bits: list[int],
    options: dict,
    calibration: Path | None = None,
    seed: int = 0,
) -> Plan:
    """Check everything a measurement needs before any weights load, and gather calibration:
    methods, bit widths, each method's options, the checkpoint, the texts, the calibration
    and the backends' checks of the architecture (on the meta device)."""
    from qid.quantize import check_bits, get_method, preflight

    for method in methods:
        get_method(method)
        if method == "released":
            raise QidError(
                "method 'released' fetches the paper's checkpoints of a grid cell; "
                "qid diagnose quantizes the checkpoint it is given"
            )
        for b in bits:
            check_bits(method, b)
    per_method = split_options(options, methods)
    for method in methods:
        for b in bits:
            check_options(method, b, per_method[method], shared=not given_per_method(options))
    checkpoint = open_checkpoint(checkpoint, "--checkpoint")
    check_texts(texts, "--texts")
    config = json.loads((checkpoint / "config.json").read_text())
    context = config.get("max_position_embeddings", config.get("n_positions"))

    plan = Plan(checkpoint, Path(texts), [])
    calibrated = [m for m in methods if get_method(m).calibration]
    if calibration is not None and not calibrated:
        plan.warnings.append(f"--calibration is not used: none of {', '.join(methods)} calibrates")
    elif calibration is not None:
        given, info, plan.warnings = _given_calibration(calibration, checkpoint, calibrated)
        for method in calibrated:
            plan.calibration[method], plan.calibration_info[method] = given, info
    else:
        for method in calibrated:
            plan.calibration[method], plan.calibration_info[method] = default_calibration(
                method, seed
            )
            if note := plan.calibration_info[method].get("note"):
                plan.warnings.append(f"{method} calibration: {note}")

    for method in methods:
        # What the grid's backends get (grid.method_options): threads are the process's.
        opts = {k: v for k, v in per_method[method].items() if k != "threads"}
        if method in plan.calibration:
            # Calibration rows are cut at the recommended length, or the model's context.
            info, length = plan.calibration_info[method], get_method(method).recommended.length
            if context and context < length:
                length = context
                plan.warnings.append(
                    f"{method} calibration: texts cut to the model's context of {context} "
                    f"tokens (recommended: {get_method(method).recommended.length})"
                )
            info["length"] = min(info["length"], length)
            opts["calibration_length"] = length
        for b in bits:
            preflight(method, b, opts, checkpoint)
            plan.cells.append((method, b, opts))
    return plan
