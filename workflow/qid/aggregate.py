"""Join the per-cell evaluation JSONs into one tidy table: a row per
(suite, size, step, method, bits, eval_set) with the 16-bit and quantized losses and QiD (Eq. 4),
the checkpoint's weight fingerprint and a `flag` on checkpoints that cannot be trusted
(qid.integrity: duplicated weights, a 16-bit loss that rose; "" when fine).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from qid import QidError
from qid.grid import BASE
from qid.integrity import flag_column

KEY = ["suite", "size", "step", "eval_set"]


def read_records(paths: list[Path]) -> pd.DataFrame:
    rows = []
    for path in paths:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise QidError(f"evaluation result {str(path)!r} is unreadable: {err}") from None
    return pd.DataFrame(rows)


def paired_se(nll_q: list[float], nll_16: list[float], reference_tokens: int) -> float:
    """Standard error of QiD from the per-text loss differences (texts taken as i.i.d.)."""
    diff = np.asarray(nll_q) - np.asarray(nll_16)
    if diff.size < 2:
        return float("nan")
    return float(np.sqrt(diff.size) * diff.std(ddof=1) / reference_tokens)


def aggregate(paths: list[Path], config_hash: str = "") -> pd.DataFrame:
    records = read_records(paths)
    # Absent from records made before fingerprints (and before they recorded their context).
    for column in ("fingerprint", "weights", "context"):
        if column not in records.columns:
            records[column] = None
    base = records[records.method == BASE]
    quant = records[records.method != BASE]
    if base.empty or quant.empty:
        raise QidError("aggregate needs both 16-bit and quantized evaluation results")
    base = base[
        [
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
        ]
    ].rename(
        columns={
            "loss": "loss_16",
            "nll_sum": "nll_sum_16",
            "nll_per_text": "nll_16",
            "context": "context_16",
        }
    )
    quant = quant[
        [
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
        ]
    ].rename(columns={"loss": "loss_q", "nll_sum": "nll_sum_q", "nll_per_text": "nll_q"})
    table = quant.merge(base, on=KEY, how="left", validate="many_to_one")
    missing = table[table.loss_16.isna()]
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
    table["qid"] = table.loss_q - table.loss_16
    table["qid_se"] = [
        paired_se(q, b, r)
        for q, b, r in zip(table.nll_q, table.nll_16, table.reference_tokens, strict=True)
    ]
    table["versions"] = table.versions.map(lambda v: json.dumps(v, sort_keys=True))
    table["config_hash"] = config_hash
    table["fingerprint"] = table.fingerprint.fillna("")
    table["flag"] = flag_column(table, base)
    columns = [
        "suite",
        "size",
        "step",
        "tokens",
        "n_params",
        "method",
        "bits",
        "eval_set",
        "loss_16",
        "loss_q",
        "qid",
        "qid_se",
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
        "config_hash",
        "versions",
    ]
    table = table[columns].astype(
        {"step": "int64", "tokens": "int64", "n_params": "int64", "bits": "int64"}
    )
    return table.sort_values(
        ["suite", "method", "eval_set", "bits", "n_params", "step"], ignore_index=True
    )
