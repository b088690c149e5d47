"""Least squares and Huber fitting: lmfit from several starts for the point fits, closed-form
weighted least squares for the bootstrap's refits (the log-space law is linear), and the
linear-space fit of every cell with its standard error (`minimize_se`)."""

from __future__ import annotations

import lmfit
import numpy as np
from scipy import optimize

from qid import QidError

LOSSES = ("linear", "huber")
# The se fit's bounds: excess scales past 1000, or a QiD of e^50 nats, mean the law has lost
# a group of cells (all at the noise floor), not that it fits them.
MAX_EXCESS = 1e3
LOG_MEAN_MAX = 50.0
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
    residual,
    params: lmfit.Parameters,
    loss: str = "linear",
    starts: int = 1,
    seed: int = 0,
    scale_covar: bool = True,
) -> tuple[lmfit.minimizer.MinimizerResult, float | None]:
    """Least squares (or Huber) from `starts` starting points, keeping the lowest cost.
    Start 0 is `params` as given; the others jitter every free parameter. Returns the result
    and the Huber scale used (None for least squares). `scale_covar=False` keeps the
    covariance of residuals already in units of their standard deviation."""
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
        result = lmfit.minimize(residual, p, method="leastsq", scale_covar=scale_covar)
        if loss == "huber":
            # Scale from the least-squares residuals, then the robust fit from that solution.
            scale = _robust_scale(result.residual) if scale is None else scale
            result = lmfit.minimize(
                residual,
                result.params,
                method="least_squares",
                loss="huber",
                f_scale=scale,
                scale_covar=scale_covar,
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


def se_variance(mu: np.ndarray, se: np.ndarray, excess: tuple[float, float]) -> np.ndarray:
    """A cell's variance under the se fit: its own se^2, inflated by (1 + phi^2) for noise the
    per-text standard error does not see (one rounding of one checkpoint: what scatters 4-bit
    cells below 0 by several se), plus the law's relative error s (s mu)^2."""
    phi, s = excess
    return (1 + phi**2) * se**2 + (s * mu) ** 2


def excess_scales(y: np.ndarray, mu: np.ndarray, se: np.ndarray) -> tuple[float, float]:
    """(phi, s) of `se_variance` by maximum likelihood given the fitted means: (0, 0) when the
    cells' own standard errors explain the scatter."""

    def nll(v: np.ndarray) -> float:
        var = se_variance(mu, se, (v[0], v[1]))
        return float(((y - mu) ** 2 / var + np.log(var)).sum())

    best = min(
        (
            optimize.minimize(nll, x0, method="L-BFGS-B", bounds=[(0, MAX_EXCESS)] * 2)
            for x0 in ([0.1, 0.1], [3.0, 1.0])
        ),
        key=lambda r: r.fun,
    )
    return float(best.x[0]), float(best.x[1])


def minimize_se(
    log_mean,
    params: lmfit.Parameters,
    y: np.ndarray,
    se: np.ndarray,
    loss: str = "linear",
    starts: int = 1,
    seed: int = 0,
    max_iter: int = 30,
) -> tuple[lmfit.minimizer.MinimizerResult, tuple[float, float], float | None]:
    """Fit mean exp(log_mean(p)) to every cell y (negative ones included) in linear space,
    each residual over its sd (`se_variance`): iteratively reweighted least squares, the
    weights held fixed within a step (quasi-likelihood: the estimating equations stay
    unbiased whatever the variance model), (phi, s) re-estimated after each step
    (`excess_scales`). Returns the result, (phi, s) and the Huber scale (None if least squares)."""
    excess, scale, result = (0.0, 0.0), None, None

    def mean(p) -> np.ndarray:
        return np.exp(np.minimum(log_mean(p), LOG_MEAN_MAX))

    mu = mean(params)
    for i in range(max_iter):
        sd = np.sqrt(se_variance(mu, se, excess))
        result, scale = minimize(
            lambda p, sd=sd: (mean(p) - y) / sd,
            params,
            loss,
            starts if i == 0 else 1,
            seed,
            # The residuals are in units of their standard deviation (the excess terms absorb
            # any overdispersion): lmfit must not rescale the covariance by chi-square again.
            scale_covar=False,
        )
        params = result.params
        mu = mean(params)
        new = excess_scales(y, mu, se)
        if np.allclose(new, excess, rtol=1e-5, atol=1e-6):
            break
        excess = new
    if result.covar is None:
        result, scale = _without_flat(lambda p: (mean(p) - y) / sd, result.params, loss, seed)
    return result, excess, scale


def _without_flat(residual, params: lmfit.Parameters, loss: str, seed: int):
    """Refit with the parameters the residuals no longer depend on held fixed: a group whose
    cells all sit at the noise floor drives its coefficient toward 0, where its column of the
    Jacobian vanishes and no parameter would get a covariance."""
    base, fixed = residual(params), params.copy()
    for name, par in params.items():
        if par.vary:
            trial = params.copy()
            trial[name].value += 1.0  # a factor e on a log coefficient
            if np.max(np.abs(residual(trial) - base)) < 1e-6:
                fixed[name].vary = False
    result, scale = minimize(residual, fixed, loss, 1, seed, scale_covar=False)
    for name, par in params.items():
        if par.vary and not fixed[name].vary:
            result.params[name].stderr = None  # no interval, rather than a zero-width one
    return result, scale
