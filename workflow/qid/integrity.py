"""Checkpoints you can trust: a fingerprint of each checkpoint's weights, and flags on the
checkpoints of a suite that cannot be what they claim to be.

Hub revisions are known to be wrong (EleutherAI/pythia #205: 86 of pythia-2.8b's 154 step
branches serve final-era weights; #206: pythia-12b steps 50000 and 58000 carry a shard of the
final model; #195: 2.8b steps 0-6300 identical; #108: a re-uploaded revision). A QiD-vs-D curve
built on them is silently wrong, so every checkpoint records a sha256 per weight file and one
`fingerprint` over them, and `flags` marks:

- `duplicate_weights:stepN`: two steps of one (suite, size) share their fingerprint or any
  weight file; both steps are flagged, each naming the other(s).
- `loss_rise:stepN`: the 16-bit loss on an eval set rose from step N to this step by more than
  its paired standard error (over the same texts); the later step is flagged.

Flagged rows stay in the table (they are data); the fits leave them out and name them.
"""

from __future__ import annotations

import hashlib
import re
from itertools import pairwise
from pathlib import Path

import pandas as pd

from qid import QidError

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# The same in every checkpoint of a Trainer run: counting it would flag them all as duplicates.
NOT_WEIGHTS = {"training_args.bin"}
CHUNK = 16 << 20  # stream: a shard can be 10 GB
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A rise of more than one paired standard error flags: a flat pair crosses it ~16% of the time,
# but a false flag only costs the fits a row, while a wrong checkpoint bends the curve.
RISE_SE = 1.0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hub_blob_sha256(path: Path) -> str | None:
    """The sha256 a Hugging Face cache already names the file by, else None.

    huggingface_hub's layout: models--Org--name/snapshots/<commit>/<file> -> ../../blobs/<hash>,
    where an LFS file's (every weight file's) hash is its sha256 (a small git file's is a
    40-digit git sha1, which is not one, so it is hashed here instead).
    """
    target = Path(path).resolve()
    in_cache = target.parent.name == "blobs" and target.parent.parent.name.startswith("models--")
    return target.name if in_cache and _SHA256.fullmatch(target.name) else None


def weight_files(directory: Path) -> list[Path]:
    files = {f for pattern in WEIGHT_PATTERNS for f in Path(directory).glob(pattern)}
    return sorted(f for f in files if f.name not in NOT_WEIGHTS)


def weight_hashes(directory: Path) -> dict[str, str]:
    """{file name: sha256} of a checkpoint's weight files; hub blobs by name, the rest hashed."""
    files = weight_files(directory)
    if not files:
        raise QidError(
            f"checkpoint {str(directory)!r} holds no weight file ({', '.join(WEIGHT_PATTERNS)})"
        )
    return {f.name: hub_blob_sha256(f) or sha256_file(f) for f in files}


def fingerprint(hashes: dict[str, str]) -> str:
    """One sha256 over the weight files' sha256s, sorted: the same weights under other file
    names (a re-sharded or renamed copy) give the same fingerprint."""
    return hashlib.sha256("\n".join(sorted(hashes.values())).encode()).hexdigest()


def checkpoint_fingerprint(directory: Path) -> dict:
    """The fields a checkpoint's qid_checkpoint.json carries: `weights` and `fingerprint`."""
    hashes = weight_hashes(directory)
    return {"weights": hashes, "fingerprint": fingerprint(hashes)}


def duplicate_flags(checkpoints: pd.DataFrame) -> dict[tuple, str]:
    """{(suite, size, step): "duplicate_weights:stepA,stepB"} for the steps of one (suite, size)
    that share their fingerprint or any weight file with another step.

    checkpoints: one row per checkpoint, columns suite, size, step, fingerprint, weights
    ({file: sha256}); a checkpoint without a fingerprint (an older record) is not compared.
    """
    flags = {}
    for (suite, size), group in checkpoints.groupby(["suite", "size"], sort=False):
        shas = {
            int(row.step): _shas(row.fingerprint, row.weights)
            for row in group.itertuples()
            if isinstance(row.fingerprint, str) and row.fingerprint
        }
        for step, mine in shas.items():
            others = sorted(s for s, theirs in shas.items() if s != step and mine & theirs)
            if others:
                flags[(suite, size, step)] = "duplicate_weights:" + ",".join(
                    f"step{s}" for s in others
                )
    return flags


def _shas(fp: str, weights) -> set[str]:
    return {fp, *(weights.values() if isinstance(weights, dict) else ())}


def loss_rise_flags(base: pd.DataFrame) -> dict[tuple, str]:
    """{(suite, size, step, eval_set): "loss_rise:stepN"} where the 16-bit loss rose from the
    previous step N by more than its paired standard error over the same texts.

    base: the 16-bit records, columns suite, size, step, eval_set, loss_16, nll_16 (per-text
    NLLs) and reference_tokens (the loss's denominator, the same texts at every step).
    """
    from qid.aggregate import paired_se

    flags = {}
    for (suite, size, eval_set), group in base.groupby(["suite", "size", "eval_set"], sort=False):
        rows = group.sort_values("step").to_dict("records")
        for before, after in pairwise(rows):
            if len(before["nll_16"]) != len(after["nll_16"]):
                continue  # not the same texts: no paired comparison
            rise = after["loss_16"] - before["loss_16"]
            se = paired_se(after["nll_16"], before["nll_16"], after["reference_tokens"])
            if rise > RISE_SE * se:  # a nan se (one text) never flags
                key = (suite, size, int(after["step"]), eval_set)
                flags[key] = f"loss_rise:step{before['step']}"
    return flags


def flag_column(table: pd.DataFrame, base: pd.DataFrame) -> pd.Series:
    """The `flag` of each row of `table` (columns suite, size, step, eval_set): "" when fine,
    else its flags joined by "; ". base: the 16-bit records with fingerprint and weights."""
    checkpoints = base.drop_duplicates(["suite", "size", "step"])
    duplicates = duplicate_flags(checkpoints)
    rises = loss_rise_flags(base)
    return pd.Series(
        [
            "; ".join(
                f
                for f in (duplicates.get((su, si, st)), rises.get((su, si, st, ev)))
                if f is not None
            )
            for su, si, st, ev in zip(
                table.suite, table["size"], table.step.astype(int), table.eval_set, strict=True
            )
        ],
        index=table.index,
        dtype=object,
    )


def flagged_checkpoints(table: pd.DataFrame) -> list[dict]:
    """One entry per flagged (suite, size, step, flag) of a table with a `flag` column."""
    if "flag" not in table.columns:
        return []
    rows = table[table["flag"].fillna("") != ""]
    keys = [c for c in ("suite", "size", "step") if c in rows.columns] + ["flag"]
    unique = rows[keys].drop_duplicates().sort_values(keys)
    return [
        {k: int(v) if k == "step" else str(v) for k, v in row.items()}
        for row in unique.to_dict("records")
    ]
