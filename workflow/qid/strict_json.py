"""JSON that every parser reads: Python's json writes NaN and ±inf as the bare tokens `NaN`,
`Infinity` and `-Infinity`, which are not JSON (jq, JavaScript and strict parsers refuse them).
qid writes a non-finite number as null and says why beside it where it matters (an eval
record's `status`, a validation fold's `note`)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, ±inf; numpy's too) replaced by None."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and hasattr(obj, "dtype") and getattr(obj, "ndim", 1) == 0:
        return finite(obj.item())  # a numpy scalar
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """json.dumps of `finite(obj)`; allow_nan=False so that a writer that bypasses `finite`
    raises instead of writing a token no parser accepts."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def dumps_indented(data: Any) -> str:
    """Indented strict JSON with each innermost list of numbers on one line (bootstrap draws,
    ranges): the format of fits.json and of qid diagnose's results."""
    return re.sub(
        r'\[[^\[\]{}"]*\]',
        lambda m: "[" + " ".join(m.group()[1:-1].split()) + "]",
        dumps(data, indent=2),
    )


def save(path: Path | None, data: Any) -> None:
    """Write `dumps_indented(data)` to `path` (its folder made); nothing when `path` is None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps_indented(data) + "\n")
