"""The rows no law is fitted to: collapsed cells (a loss is NaN or inf; column `status`, from
qid.aggregate) and flagged checkpoints (column `flag`, from qid.integrity). They stay in the
table; the fits leave them out and name them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qid import QidError
from qid.aggregate import CELL
from qid.integrity import flagged_checkpoints


def collapsed_cells(table: pd.DataFrame) -> list[dict]:
    """One entry per row whose `status` is "collapsed" (qid.aggregate: a loss is NaN or
    infinite): its cell and which loss."""
    if "status" not in table.columns:
        return []
    rows = table[table["status"] == "collapsed"]
    out = []
    for row in rows.to_dict("records"):
        cell = {k: int(row[k]) if k in ("step", "bits") else str(row[k]) for k in CELL if k in row}
        which = [
            f"{name} loss is {row[column]}"
            for column, name in (("loss_q", "quantized"), ("loss_16", "16-bit"))
            if column in row and not np.isfinite(float(row[column]))
        ]
        out.append({**cell, "why": "; ".join(which) or "collapsed"})
    return out


def drop_collapsed(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """The rows that did not collapse, and the collapsed cells: a diverged model's QiD is
    infinite or undefined, so no law can be fitted to it (the rows stay in the table)."""
    collapsed = collapsed_cells(table)
    if not collapsed:
        return table, []
    kept = table[table["status"] != "collapsed"]
    if kept.empty:
        raise QidError(f"no rows to fit: all {len(table)} are collapsed (a loss is NaN or inf)")
    return kept, collapsed


def drop_flagged(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """The rows whose checkpoint is not flagged, and the flagged checkpoints: the one place
    where suspect checkpoints leave the fits (they stay in the table)."""
    flagged = flagged_checkpoints(table)
    if not flagged:
        return table, []
    kept = table[table["flag"].fillna("") == ""]
    if kept.empty:
        kinds = sorted({part.split(":")[0] for f in flagged for part in f["flag"].split("; ")})
        raise QidError(f"no rows to fit: all {len(table)} are flagged ({', '.join(kinds)})")
    return kept, flagged


def fittable(table: pd.DataFrame) -> pd.DataFrame:
    """The rows drop_collapsed and drop_flagged keep, without their errors (may be empty): for
    the side fits (per method, per held-out suite), where an empty part is a skipped fit."""
    keep = pd.Series(True, index=table.index)
    if "status" in table.columns:
        keep &= table["status"] != "collapsed"
    if "flag" in table.columns:
        keep &= table["flag"].fillna("") == ""
    return table[keep]
