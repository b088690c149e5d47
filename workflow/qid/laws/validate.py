"""Held-out validation of Eq. (8): refit without part of the rows, measure the error on it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from qid.laws.equations import UnifiedLaw
from qid.laws.fit import fit_law, usable
from qid.laws.predict import unified_from_fit


def _errors(law: UnifiedLaw, test: pd.DataFrame) -> dict:
    """Prediction error on held-out rows: RMSE of log QiD (usable rows: finite and positive)
    and mean absolute error in nats (every finite row: a measured QiD <= 0 is still a miss in
    nats). An error without rows to measure it on is None, with a `note` saying why (never
    NaN or inf: fits.json is strict JSON)."""
    q = pd.to_numeric(test["qid"], errors="coerce").to_numpy(float)
    pred = law.qid(*(test[c].to_numpy(float) for c in ("n_params", "tokens", "bits")))
    pos, fin = usable(test).to_numpy(bool), np.isfinite(q)
    out = {
        "n_test": int(fin.sum()),
        "rmse_log": float(np.sqrt(np.mean((np.log(pred[pos]) - np.log(q[pos])) ** 2)))
        if pos.any()
        else None,
        "mae_nats": float(np.mean(np.abs(pred[fin] - q[fin]))) if fin.any() else None,
    }
    if not pos.any():
        what = "no held-out QiD is finite" if not fin.any() else "no held-out QiD is positive"
        out["note"] = f"{what}: nothing to measure the error on"
    return out


def validate(
    table: pd.DataFrame, holdout: float = 0.2, weighted: bool = True, loss: str = "linear"
) -> dict:
    """Held-out error of Eq. (8): refit without each model size in turn (interpolation or
    extrapolation in N) and without the last `holdout` fraction of training steps
    (extrapolation in D, the direction the paper's projections go). `table`: one method and
    eval set, as fit_all selects them."""
    folds = [(f"n_params={n:.6g}", table["n_params"] == n) for n in sorted(set(table.n_params))]
    tokens = np.sort(table["tokens"].unique())
    last = tokens[len(tokens) - max(1, int(round(holdout * len(tokens)))) :]
    folds.append((f"last {len(last)} of {len(tokens)} steps", table["tokens"].isin(last)))
    out = []
    for name, held in folds:
        fit = fit_law(table[~held], "unified", weighted=weighted, loss=loss)
        if "params" not in fit:
            out.append({"held_out": name, "skipped": fit["skipped"]})
            continue
        law = unified_from_fit(fit)
        out.append({"held_out": name, "n_train": fit["n_points"], **_errors(law, table[held])})
    rmse = [f["rmse_log"] for f in out if f.get("rmse_log") is not None]
    mae = [f["mae_nats"] for f in out if f.get("mae_nats") is not None]
    return {
        "folds": out,
        "rmse_log": float(np.sqrt(np.mean(np.square(rmse)))) if rmse else None,
        "mae_nats": float(np.mean(mae)) if mae else None,
    }
