"""Bootstrap percentile intervals for Eq. (8): refits on resampled rows, and their summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize

from qid.laws.equations import DRAW_NAMES
from qid.laws.minimize import wls


def bootstrap_unified(
    data: pd.DataFrame,
    weights: np.ndarray,
    fixed: list[str],
    n_boot: int,
    seed: int = 0,
    scale: float | None = None,
) -> np.ndarray:
    """Refit Eq. (8) on `n_boot` resamples of the rows (with replacement): an (n_boot, 4)
    array of [k, alpha, beta, gamma], NaN rows where a resample could not be fitted.
    log qid = log k + beta log D - alpha log N - gamma log P is linear, so each refit is a
    closed-form weighted least squares (same weights and loss as the point fit)."""
    names = ["alpha", "beta", "gamma"]
    sign = {"alpha": -1.0, "beta": 1.0, "gamma": -1.0}
    column = {"alpha": "n_params", "beta": "tokens", "gamma": "bits"}
    free = [n for n in names if n not in fixed]
    x = np.column_stack(
        [np.ones(len(data))] + [sign[n] * np.log(data[column[n]].to_numpy(float)) for n in free]
    )
    y = np.log(data["qid"].to_numpy(float))
    rng = np.random.default_rng(seed)
    draws = np.full((n_boot, 4), np.nan)
    for b in range(n_boot):
        rows = rng.integers(0, len(y), len(y))
        coef = wls(x[rows], y[rows], weights[rows], scale)
        if coef is None:
            continue
        values = dict(zip(free, coef[1:], strict=True))
        draws[b] = [np.exp(coef[0])] + [values.get(n, 0.0) for n in names]
    return draws


def bootstrap_se(
    data: pd.DataFrame,
    sd: np.ndarray,
    start: np.ndarray,
    fixed: list[str],
    n_boot: int,
    seed: int = 0,
    scale: float | None = None,
) -> np.ndarray:
    """bootstrap_unified for the "se" likelihood: each resample of the rows refitted in linear
    space, qid ~ exp(x @ theta) with each cell's sd held at the point fit's (its variance
    model fixed, as the log fit's weights are), from the point fit's `start` = [log k, free
    exponents]. Gauss-Newton with the analytic Jacobian keeps 1000 resamples to seconds.
    The same (n_boot, 4) array of [k, alpha, beta, gamma]; NaN rows where a resample lost all
    but one value of a fitted factor."""
    names = ["alpha", "beta", "gamma"]
    sign = {"alpha": -1.0, "beta": 1.0, "gamma": -1.0}
    column = {"alpha": "n_params", "beta": "tokens", "gamma": "bits"}
    free = [n for n in names if n not in fixed]
    factors = [data[column[n]].to_numpy(float) for n in free]
    x = np.column_stack(
        [np.ones(len(data))] + [sign[n] * np.log(f) for n, f in zip(free, factors, strict=True)]
    )
    qid = data["qid"].to_numpy(float)
    rng = np.random.default_rng(seed)
    draws = np.full((n_boot, 4), np.nan)
    for b in range(n_boot):
        rows = rng.integers(0, len(qid), len(qid))
        if any(len(np.unique(f[rows])) < 2 for f in factors):
            continue
        xr, yr, sr = x[rows], qid[rows], sd[rows]

        def residual(theta, xr=xr, yr=yr, sr=sr):
            return (np.exp(np.minimum(xr @ theta, 50.0)) - yr) / sr

        def jacobian(theta, xr=xr, sr=sr):
            return (np.exp(np.minimum(xr @ theta, 50.0)) / sr)[:, None] * xr

        fit = optimize.least_squares(
            residual,
            start,
            jac=jacobian,
            method="trf",
            loss="linear" if scale is None else "huber",
            f_scale=1.0 if scale is None else scale,
        )
        if not fit.success:
            continue
        values = dict(zip(free, fit.x[1:], strict=True))
        draws[b] = [np.exp(fit.x[0])] + [values.get(n, 0.0) for n in names]
    return draws


def bootstrap_block(draws: np.ndarray, fixed: list[str], confidence: float, seed: int) -> dict:
    """A fit's "bootstrap" entry: percentile intervals per free parameter, and the draws."""
    ok = draws[np.all(np.isfinite(draws), axis=1)]
    q = 50 * (1 - confidence), 50 * (1 + confidence)
    params = {
        name: {
            "low": float(np.percentile(ok[:, i], q[0])),
            "high": float(np.percentile(ok[:, i], q[1])),
            "median": float(np.median(ok[:, i])),
        }
        for i, name in enumerate(DRAW_NAMES)
        if name not in fixed
    }
    return {
        "n": len(draws),
        "n_failed": int(len(draws) - len(ok)),
        "seed": seed,
        "confidence": confidence,
        "params": params,
        # The draws themselves, so that predictions (Table 1, diagnose) get percentile CIs too.
        "draws": {"names": DRAW_NAMES, "values": [[float(f"{v:.6g}") for v in d] for d in ok]},
    }
