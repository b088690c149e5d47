"""Predictions from fits: the law a fit describes, joint parameter draws for intervals, the
predicted quantized loss, and which of N, D, P lie outside the range a fit saw."""

from __future__ import annotations

import numpy as np

from qid.laws.equations import DRAW_NAMES, Loss16Law, UnifiedLaw
from qid.laws.paper import PUBLISHED, PUBLISHED_LOSS16


def unified_from_fit(fit: dict) -> UnifiedLaw:
    p = fit["params"]
    return UnifiedLaw(
        k=p["k"]["value"],
        alpha=p.get("alpha", {"value": 0.0})["value"],
        beta=p.get("beta", {"value": 0.0})["value"],
        gamma=p.get("gamma", {"value": 0.0})["value"],
    )


def loss16_from_fit(fit: dict) -> Loss16Law:
    p = fit["params"]
    return Loss16Law(*(p[name]["value"] for name in ("nc", "dc", "alpha_n", "alpha_d")))


def loss_q(
    n, tokens, bits, qid_law: UnifiedLaw = PUBLISHED, loss_law: Loss16Law = PUBLISHED_LOSS16
):
    """Predicted loss of the quantized model, Loss_q = Loss_16 + QiD (Sec. 3.5, Fig. 7)."""
    return loss_law.loss(n, tokens) + qid_law.qid(n, tokens, bits)


def outside(fit: dict, **values: float) -> dict[str, tuple[float, float]]:
    """{column: (low, high)} of the fit's range for each of `values` (n_params, tokens, bits)
    that lies outside it, in the order given (a column without a range is unbounded)."""
    ranges, out = fit.get("range", {}), {}
    for column, value in values.items():
        lo, hi = ranges.get(column, (-np.inf, np.inf))
        if not lo <= value <= hi:
            out[column] = (lo, hi)
    return out


def parameter_draws(fit: dict, size: int = 2000, seed: int = 0) -> tuple[np.ndarray | None, str]:
    """Joint draws of [k, alpha, beta, gamma] from a unified fit: its bootstrap draws when it
    has them, else `size` samples from the normal approximation of (log k, exponents) given by
    its covariance; (None, "none") for a law without uncertainty (the published one)."""
    if "bootstrap" in fit:
        return np.asarray(fit["bootstrap"]["draws"]["values"], float), "bootstrap"
    if "covariance" not in fit:
        return None, "none"
    names, cov = fit["covariance"]["names"], np.asarray(fit["covariance"]["matrix"], float)
    law = unified_from_fit(fit)
    mean = [np.log(law.k) if n == "log_k" else getattr(law, n) for n in names]
    sample = np.random.default_rng(seed).multivariate_normal(mean, cov, size)
    columns = dict(zip(names, sample.T, strict=True))
    draws = np.column_stack(
        [np.exp(columns["log_k"])]
        + [columns.get(n, np.full(size, getattr(law, n))) for n in DRAW_NAMES[1:]]
    )
    return draws, "normal approximation"


def draws_law(draws: np.ndarray) -> UnifiedLaw:
    """One UnifiedLaw whose parameters are column vectors: it evaluates every draw at once."""
    return UnifiedLaw(*(d[:, None] for d in np.asarray(draws, float).T))


def interval(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis (the draws). An end that falls among infinite
    draws (D for a draw with beta near 0) is infinite, an open end, where interpolating between
    two infinities would give NaN."""
    ends = []
    for q in (50 * (1 - confidence), 50 * (1 + confidence)):
        with np.errstate(invalid="ignore"):
            end = np.nanpercentile(values, q, axis=0)
        if np.isnan(end).any():
            end = np.where(
                np.isnan(end), np.nanpercentile(values, q, axis=0, method="nearest"), end
            )
        ends.append(end)
    return ends[0], ends[1]


def predict_ci(
    fit: dict, n, tokens, bits=1.0, confidence: float = 0.95, size: int = 2000, seed: int = 0
) -> dict:
    """Predicted QiD at (N, D, P) with its interval from the fit's draws (bootstrap if present):
    {"qid", "low", "high", "ci"}; low/high are None for a law without uncertainty."""
    n, tokens, bits = (np.atleast_1d(np.asarray(v, float)) for v in (n, tokens, bits))
    point = unified_from_fit(fit).qid(n, tokens, bits)
    draws, kind = parameter_draws(fit, size, seed)
    if draws is None:
        return {"qid": point, "low": None, "high": None, "ci": kind}
    low, high = interval(draws_law(draws).qid(n, tokens, bits), confidence)
    return {"qid": point, "low": low, "high": high, "ci": kind}
