"""Least squares and Huber fitting: lmfit from several starts for the point fits, closed-form
weighted least squares for the bootstrap's refits (the log-space law is linear)."""

from __future__ import annotations

import lmfit
import numpy as np

from qid import QidError

LOSSES = ("linear", "huber")
HUBER_T = 1.345  # Huber's tuning constant: 95% efficiency when the errors are normal


def _huber_cost(r: np.ndarray, scale: float | None) -> float:
    if scale is None:
        return float(0.5 * (r**2).sum())
    a = np.abs(r)
    return float(np.where(a <= scale, 0.5 * r**2, scale * (a - 0.5 * scale)).sum())


def _robust_scale(r: np.ndarray) -> float:
    """Huber's transition point from the residuals' MAD (robust to the outliers it guards
    against); floored so that an exact fit does not give a zero scale."""
    sigma = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    return HUBER_T * max(sigma, 1e-8)


def minimize(
    residual, params: lmfit.Parameters, loss: str = "linear", starts: int = 1, seed: int = 0
) -> tuple[lmfit.minimizer.MinimizerResult, float | None]:
    """Least squares (or Huber) from `starts` starting points, keeping the lowest cost.
    Start 0 is `params` as given; the others jitter every free parameter. Returns the result
    and the Huber scale used (None for least squares)."""
    if loss not in LOSSES:
        raise QidError(f"unknown loss {loss!r} (choose from {', '.join(LOSSES)})")
    rng = np.random.default_rng(seed)
    best, best_cost, scale = None, np.inf, None
    for i in range(max(1, starts)):
        p = params.copy()
        if i:
            for par in p.values():
                if par.vary:
                    lo, hi = par.min, par.max
                    par.value = float(np.clip(rng.normal(par.value, 1.0), lo, hi))
        result = lmfit.minimize(residual, p, method="leastsq")
        if loss == "huber":
            # Scale from the least-squares residuals, then the robust fit from that solution.
            scale = _robust_scale(result.residual) if scale is None else scale
            result = lmfit.minimize(
                residual, result.params, method="least_squares", loss="huber", f_scale=scale
            )
        cost = _huber_cost(result.residual, scale)
        if np.isfinite(cost) and cost < best_cost:
            best, best_cost = result, cost
    if best is None:
        raise QidError("the fit failed from every starting point")
    return best, scale


def wls(x: np.ndarray, y: np.ndarray, w: np.ndarray, scale: float | None) -> np.ndarray | None:
    """Weighted least squares, or Huber by iteratively reweighted least squares; None when
    the design is rank-deficient (a resample that lost all but one value of a factor)."""
    h, previous = np.ones_like(y), None
    for _ in range(1 if scale is None else 50):
        sw = w * np.sqrt(h)
        coef, _, rank, _ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
        if rank < x.shape[1]:
            return None
        if scale is None or (previous is not None and np.allclose(coef, previous, atol=1e-9)):
            break
        previous = coef
        r = np.abs(w * (x @ coef - y))
        h = np.minimum(1.0, scale / np.maximum(r, 1e-300))
    return coef
