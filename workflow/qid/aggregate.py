"""Join the per-cell evaluation JSONs into one tidy table: a row per
(suite, size, step, method, bits, eval_set) with the 16-bit and quantized losses and QiD (Eq. 4),
the checkpoint's weight fingerprint, a `flag` on checkpoints that cannot be trusted
(qid.integrity: duplicated weights, a 16-bit loss that rose; "" when fine) and a `status`:
"collapsed" where a loss is NaN or infinite, else "ok".

A malformed record, a cell held by two records, or a failed cell (a record with status
"failed", its loss never measured) is refused in one line that names the files and the command
that fixes it: a refused result would otherwise keep failing every rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from qid import QidError
from qid.grid import BASE, variant
from qid.integrity import flag_column

KEY = ["suite", "size", "step", "eval_set"]
# What identifies a cell, and what aggregate reads from each record besides.
CELL = ["suite", "size", "step", "method", "bits", "eval_set"]
REQUIRED = [
    *CELL,
    "tokens",
    "n_params",
    "loss",
    "nll_sum",
    "nll_per_text",
    "model_tokens",
    "reference_tokens",
    "texts",
    "reference_tokenizer",
    "seed",
    "versions",
]
# The workflow regenerates a missing result, so removing a bad one is the whole fix.
RERUN = "snakemake"


def _rm(paths: list) -> str:
    """The shell command that removes `paths` (single-quoted) and regenerates them."""
    quoted = ("'" + str(p).replace("'", "'\\''") + "'" for p in paths)
    return f"rm -f {' '.join(quoted)} && {RERUN}"


def _problem(record, required: list[str]) -> str | None:
    """Why `record` (parsed JSON) cannot be aggregated, or None."""
    if not isinstance(record, dict):
        return f"is {type(record).__name__}, not a record"
    missing = [k for k in required if k not in record]
    if missing:
        return f"lacks key(s) {', '.join(missing)}"
    loss = record.get("loss")
    if loss is not None and not isinstance(loss, int | float):
        return f"has a loss that is not a number ({loss!r})"
    return None


def _parse(path: Path) -> tuple[dict | None, str | None]:
    """(record, None), or (None, why it is malformed)."""
    try:
        record = json.loads(Path(path).read_text())
    except OSError as err:
        return None, f"is unreadable ({err.strerror or err})"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, f"is not JSON ({err})"
    failed = isinstance(record, dict) and record.get("status") == "failed"
    return record, _problem(record, [*CELL, "error"] if failed else REQUIRED)


def _variant(method: str, bits) -> str:
    return BASE if method == BASE else variant(method, bits)  # the 16-bit model's directory


def cell_name(record: dict) -> str:
    """micro/h32-l1/step8 gptq-3bit on sotu"""
    return (
        f"{record['suite']}/{record['size']}/step{record['step']} "
        f"{_variant(record['method'], record['bits'])} on {record['eval_set']}"
    )


def _refuse_malformed(bad: list[tuple[Path, str]]) -> None:
    if bad:
        what = "; ".join(f"evaluation result {str(p)!r} {why}" for p, why in bad)
        raise QidError(f"{what}: remove and regenerate: {_rm([p for p, _ in bad])}")


def _refuse_duplicates(records: list[tuple[Path, dict]]) -> None:
    seen: dict[tuple, Path] = {}
    pairs = []
    for path, record in records:
        key = tuple(str(record[k]) for k in CELL)
        if key in seen:
            pairs.append((seen[key], path, record))
        else:
            seen[key] = path
    if pairs:
        what = "; ".join(f"{str(a)!r} and {str(b)!r} both hold {cell_name(r)}" for a, b, r in pairs)
        paths = [p for a, b, _ in pairs for p in (a, b)]
        raise QidError(f"{what}: remove and regenerate: {_rm(paths)}")


def _one_line(text) -> str:
    return " ".join(str(text).split()) or "(no error given)"


def _set_aside_failed(records: list[tuple[Path, dict]]) -> None:
    """Move each failed cell's record to <name>.failed.json (kept for inspection; its result
    path is then missing, so the next snakemake run redoes exactly those cells) and refuse."""
    failed = [(p, r) for p, r in records if r.get("status") == "failed"]
    if not failed:
        return
    for path, _ in failed:
        Path(path).replace(Path(path).with_suffix(".failed.json"))
    cells = "; ".join(f"{cell_name(r)}: {_one_line(r['error'])}" for _, r in failed)
    raise QidError(
        f"{len(failed)} cell(s) failed: {cells}; their records were moved to *.failed.json, "
        f"rerun {RERUN} to redo them"
    )


def read_records(paths: list[Path]) -> pd.DataFrame:
    """The records of `paths`, refused in one line naming the files (and the command that
    fixes them) when any is malformed, holds a cell another holds too, or is a failed cell."""
    records, bad = [], []
    for path in paths:
        record, why = _parse(path)
        if why is None:
            records.append((path, record))
        else:
            bad.append((path, why))
    _refuse_malformed(bad)
    _refuse_duplicates(records)
    _set_aside_failed(records)
    return pd.DataFrame([r for _, r in records])


def paired_se(nll_q: list[float], nll_16: list[float], reference_tokens: int) -> float:
    """Standard error of QiD from the per-text loss differences (texts taken as i.i.d.)."""
    # float: a collapsed record's non-finite NLLs were written as null
    diff = np.asarray(nll_q, float) - np.asarray(nll_16, float)
    if diff.size < 2 or not np.isfinite(diff).all():  # a collapsed cell has no spread
        return float("nan")
    return float(np.sqrt(diff.size) * diff.std(ddof=1) / reference_tokens)


def status_column(table: pd.DataFrame) -> pd.Series:
    """ "collapsed" where the quantized or the 16-bit loss is NaN or infinite, else "ok": a
    diverged model is a result, so its row stays (the fits leave it out and name it)."""
    finite = np.isfinite(table.loss_q.astype(float)) & np.isfinite(table.loss_16.astype(float))
    return pd.Series(np.where(finite, "ok", "collapsed"), index=table.index, dtype=object)


# The checkpoint's learning-rate schedule (qid.schedule), read from its 16-bit record: empty
# (NaN, "") for records made before it was recorded and for checkpoints of unpublished schedule.
SCHEDULE = ["lr", "schedule", "decay_step"]
# Numbers a record may lack (made before they were measured): NaN in the table.
DIVERGENCE = ("kl", "kl_se", "top1_agreement", "bytes")
# What each side of the join keeps (and calls its columns), and the table's columns in order.
BASE_COLUMNS = [
    *KEY,
    "tokens",
    "n_params",
    "loss",
    "nll_sum",
    "reference_tokens",
    "nll_per_text",
    "seed",
    "fingerprint",
    "weights",
    "context",
    *SCHEDULE,
    "bytes",
]
BASE_NAMES = {
    "loss": "loss_16",
    "nll_sum": "nll_sum_16",
    "nll_per_text": "nll_16",
    "context": "context_16",
}
QUANT_COLUMNS = [
    *KEY,
    "method",
    "bits",
    "loss",
    "nll_sum",
    "model_tokens",
    "texts",
    "reference_tokenizer",
    "nll_per_text",
    "versions",
    "context",
    "kl",
    "kl_se",
    "top1_agreement",
    "bytes",
]
QUANT_NAMES = {
    "loss": "loss_q",
    "nll_sum": "nll_sum_q",
    "nll_per_text": "nll_q",
    "bytes": "bytes_q",
}
TABLE_COLUMNS = [
    "suite",
    "size",
    "step",
    "tokens",
    "n_params",
    *SCHEDULE,
    "method",
    "bits",
    "eval_set",
    "loss_16",
    "loss_q",
    "qid",
    "qid_se",
    "kl",
    "kl_se",
    "top1_agreement",
    "qid_bpb",
    "nll_sum_16",
    "nll_sum_q",
    "model_tokens",
    "reference_tokens",
    "texts",
    "reference_tokenizer",
    "context",
    "seed",
    "fingerprint",
    "flag",
    "status",
    "config_hash",
    "versions",
]


def _base_and_quantized(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 16-bit and the quantized records, each with the columns the join keeps."""
    # Absent from records made before fingerprints (and before they recorded their context).
    for column in ("fingerprint", "weights", "context"):
        if column not in records.columns:
            records[column] = None
    # Absent from records made before qid.divergence (NaN in the table), null where collapsed.
    for column in DIVERGENCE:
        records[column] = pd.to_numeric(records.get(column), errors="coerce").astype(float)
    # A collapsed record writes its non-finite numbers as null (qid.strict_json): NaN here.
    records["loss"] = pd.to_numeric(records["loss"], errors="coerce").astype(float)
    records["nll_sum"] = pd.to_numeric(records["nll_sum"], errors="coerce").astype(float)
    records = _with_schedule(records)
    base = records[records.method == BASE]
    quant = records[records.method != BASE]
    if base.empty or quant.empty:
        raise QidError("aggregate needs both 16-bit and quantized evaluation results")
    return (
        base[BASE_COLUMNS].rename(columns=BASE_NAMES),
        quant[QUANT_COLUMNS].rename(columns=QUANT_NAMES),
    )


def _with_schedule(records: pd.DataFrame) -> pd.DataFrame:
    """`records` with the SCHEDULE columns typed: lr and decay_step float (NaN where unknown),
    schedule a string ("" where unknown)."""
    columns = {c: records[c] if c in records.columns else None for c in SCHEDULE}
    return records.assign(
        lr=pd.to_numeric(columns["lr"], errors="coerce"),
        decay_step=pd.to_numeric(columns["decay_step"], errors="coerce"),
        schedule=pd.Series(columns["schedule"], index=records.index, dtype=object).fillna(""),
    ).astype({"lr": float, "decay_step": float})


def _join(quant: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Each quantized record beside its 16-bit model's, refusing one without it or measured
    with another context."""
    table = quant.merge(base, on=KEY, how="left", validate="many_to_one", indicator=True)
    missing = table[table._merge == "left_only"]
    if not missing.empty:
        row = missing.iloc[0]
        raise QidError(
            f"no 16-bit evaluation for {row['suite']}/{row['size']}/step{row['step']} "
            f"on eval set {row.eval_set!r}"
        )
    # A QiD of losses measured with different windows measures the windows, not quantization.
    differ = table[
        table.context.notna() & table.context_16.notna() & (table.context != table.context_16)
    ]
    if not differ.empty:
        row = differ.iloc[0]
        raise QidError(
            f"{row['suite']}/{row['size']}/step{row['step']} {row['method']}-{row['bits']}bit "
            f"on {row.eval_set!r} was evaluated with context {row.context}, its 16-bit model "
            f"with context {row.context_16}"
        )
    return table


def aggregate(paths: list[Path], config_hash: str = "") -> pd.DataFrame:
    """The QiD table: one row per quantized cell and eval set, beside its 16-bit model."""
    base, quant = _base_and_quantized(read_records(paths))
    table = _join(quant, base)
    table["qid"] = table.loss_q - table.loss_16
    # Bits per byte of the texts, which no tokenizer changes (qid.divergence).
    utf8 = table["bytes"].fillna(table["bytes_q"])  # a 16-bit record kept from before has none
    table["qid_bpb"] = (table.nll_sum_q - table.nll_sum_16) / np.log(2) / utf8
    table["qid_se"] = [
        paired_se(q, b, r)
        for q, b, r in zip(table.nll_q, table.nll_16, table.reference_tokens, strict=True)
    ]
    table["versions"] = table.versions.map(lambda v: json.dumps(v, sort_keys=True))
    table["config_hash"] = config_hash
    table["fingerprint"] = table.fingerprint.fillna("")
    table["flag"] = flag_column(table, base)
    table["status"] = status_column(table)
    table = table[TABLE_COLUMNS].astype(
        {"step": "int64", "tokens": "int64", "n_params": "int64", "bits": "int64"}
    )
    return table.sort_values(
        ["suite", "method", "eval_set", "bits", "n_params", "step"], ignore_index=True
    )
