"""Fitting one law to rows of the table: Eq. (5)-(8) in log space (`fit_law`), Eq. (3) on the
16-bit losses (`fit_loss16`). Results are plain JSON-able dicts, with the range of N, D and P
they saw (`range`), so that predictions can refuse to extrapolate.

Where the table has `qid_se` (the paired per-text standard error of each cell), residuals are
weighted by qid / qid_se, the inverse of log(qid)'s standard error: cells whose QiD sits at the
noise floor (3-4 bits on small models) then do not outvote the cells that carry the signal.
The log-space fit drops cells with QiD <= 0; `likelihood="se"` fits them too (`_fit_se`).
"""

from __future__ import annotations

import lmfit
import numpy as np
import pandas as pd
from scipy import stats

from qid import QidError
from qid.laws.bootstrap import bootstrap_block, bootstrap_se, bootstrap_unified
from qid.laws.equations import DRAW_NAMES, LAWS, log_loss16
from qid.laws.minimize import minimize, minimize_se, se_variance

LIKELIHOODS = ("log", "se")


def usable(table: pd.DataFrame, likelihood: str = "log") -> pd.Series:
    """Rows a fit can use (the rest are counted, not hidden): finite, positive QiD for the
    log-space fit; every finite QiD with a finite, positive qid_se for the "se" fit."""
    q = pd.to_numeric(table["qid"], errors="coerce")
    if likelihood == "log":
        return np.isfinite(q) & (q > 0)
    if "qid_se" not in table.columns:
        raise QidError("the 'se' likelihood needs the table's qid_se column (or: --likelihood log)")
    se = pd.to_numeric(table["qid_se"], errors="coerce")
    return np.isfinite(q) & np.isfinite(se) & (se > 0)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(1 - ((y - pred) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def _param(value: float, stderr: float | None, t: float, log: bool = False) -> dict:
    stderr = float("nan") if stderr is None else float(stderr)
    lo, hi = value - t * stderr, value + t * stderr
    if log:  # fitted as log(coef): report the coefficient, its delta-method stderr, exp'd CI
        # A wide interval overflows exp to inf, which fits.json writes as null (strict_json).
        with np.errstate(over="ignore"):
            return {
                "value": float(np.exp(value)),
                "stderr": float(np.exp(value) * stderr),
                "ci_low": float(np.exp(lo)),
                "ci_high": float(np.exp(hi)),
            }
    return {"value": float(value), "stderr": stderr, "ci_low": float(lo), "ci_high": float(hi)}


def log_weights(data: pd.DataFrame) -> np.ndarray | None:
    """1 / stderr of log(qid) = qid / qid_se, where the table has usable standard errors."""
    if "qid_se" not in data.columns:
        return None
    se = pd.to_numeric(data["qid_se"], errors="coerce").to_numpy(float)
    if not np.all(np.isfinite(se) & (se > 0)):
        return None
    return data["qid"].to_numpy(float) / se


def fitted_range(data: pd.DataFrame) -> dict:
    """[min, max] of N, D and P in the rows a fit used: the law's domain of validity."""
    return {c: [float(data[c].min()), float(data[c].max())] for c in ("n_params", "tokens", "bits")}


def _coefficients(data, group_cols, coef, params, t) -> list[dict]:
    """A single-factor law's coefficient per group, keyed by the group's values."""
    keys = data.groupby(group_cols, sort=True).size().index
    out = []
    for g, key in enumerate(keys):
        key = key if isinstance(key, tuple) else (key,)
        p = params[f"log_{coef}_{g}"]
        out.append(
            {
                **{c: float(v) for c, v in zip(group_cols, key, strict=True)},
                **_param(p.value, p.stderr, t, log=True),
            }
        )
    return out


def fit_law(
    table: pd.DataFrame,
    law: str,
    confidence: float = 0.95,
    weighted: bool = True,
    loss: str = "linear",
    starts: int = 1,
    bootstrap: int = 0,
    seed: int = 0,
    likelihood: str = "log",
) -> dict:
    """Fit one law to the usable rows of `table`; the result is plain JSON-able data.
    `loss="huber"` downweights outlying cells; `starts` > 1 tries jittered starting points;
    `bootstrap` > 0 (unified law only) adds percentile intervals under "bootstrap";
    `likelihood="se"` fits every cell, QiD <= 0 included, in linear space (`_fit_se`)."""
    if likelihood not in LIKELIHOODS:
        raise QidError(f"unknown likelihood {likelihood!r} (choose from {', '.join(LIKELIHOODS)})")
    coef, exponents, group_cols = LAWS[law]
    ok = usable(table, likelihood)
    data = table[ok]
    out = {"n_points": int(ok.sum()), "n_excluded": int((~ok).sum())}
    fixed = [name for name, (col, _) in exponents.items() if data[col].nunique() < 2]
    if law != "unified" and fixed:
        return {**out, "skipped": f"needs at least 2 distinct values of {exponents[fixed[0]][0]}"}
    groups = (
        data.groupby(group_cols, sort=True).ngroup().to_numpy()
        if group_cols
        else np.zeros(len(data), dtype=int)
    )
    n_groups = int(groups.max()) + 1 if len(data) else 0
    n_free = len(exponents) - len(fixed) + n_groups
    if len(data) <= n_free:
        return {**out, "skipped": f"{len(data)} usable points for {n_free} parameters"}

    q = data["qid"].to_numpy(float)
    # The "se" fit starts from a log-space fit to max(qid, qid_se): a floor, for starting only.
    y = np.log(q if likelihood == "log" else np.maximum(q, _se(data)))
    weights = log_weights(data) if weighted and likelihood == "log" else None
    w = np.ones_like(y) if weights is None else weights / weights.mean()
    logx = {name: np.log(data[col].to_numpy(float)) for name, (col, _) in exponents.items()}
    params = lmfit.Parameters()
    for name in exponents:
        # An exponent is unidentifiable when its factor does not vary: fix it at 0 and say so.
        params.add(name, value=0.0 if name in fixed else 0.5, vary=name not in fixed)
    for g in range(n_groups):
        params.add(f"log_{coef}_{g}", value=float(y[groups == g].mean()))

    def predict(p) -> np.ndarray:
        base = np.array([p[f"log_{coef}_{g}"].value for g in range(n_groups)])[groups]
        return base + sum(
            sign * p[name].value * logx[name] for name, (_, sign) in exponents.items()
        )

    if likelihood == "se":
        start, _ = minimize(lambda p: predict(p) - y, params)
        fit = _fit_se(data, predict, start.params, loss, starts, seed, bootstrap, fixed)
        fit["confidence"] = confidence
        dof = len(y) - n_free - sum(v > 0 for v in fit["excess"].values())
        result = fit.pop("result")
    else:
        result, scale = minimize(lambda p: w * (predict(p) - y), params, loss, starts, seed)
        fit = _log_summary(result, y, predict(result.params), weights is not None, confidence)
        fit.update({"loss": loss, **({"huber_scale": scale} if scale is not None else {})})
        dof = len(y) - n_free
    t = float(stats.t.ppf(0.5 + confidence / 2, max(1, dof)))
    fitted = {
        name: _param(result.params[name].value, result.params[name].stderr, t)
        for name in exponents
        if name not in fixed
    }
    coefficients = []
    if group_cols:
        coefficients = _coefficients(data, group_cols, coef, result.params, t)
    else:
        p = result.params[f"log_{coef}_0"]
        fitted = {coef: _param(p.value, p.stderr, t, log=True), **fitted}
    boot = fit.pop("draws", None)
    fit = {
        **out,
        "params": fitted,
        "fixed": {name: 0.0 for name in fixed},
        "coefficients": coefficients,
        **fit,
        "range": fitted_range(data),
    }
    if law == "unified" and result.covar is not None:
        # Joint covariance (log k and the exponents) for sampling predictions when there is no
        # bootstrap: log k and the exponents are strongly correlated, so stderrs alone overstate.
        names = [n.replace("log_k_0", "log_k") for n in result.var_names]
        fit["covariance"] = {"names": names, "matrix": np.asarray(result.covar).tolist()}
    if law == "unified" and bootstrap > 0:
        if boot is None:
            boot = bootstrap_unified(data, w, fixed, bootstrap, seed, fit.get("huber_scale"))
        fit["bootstrap"] = bootstrap_block(boot, fixed, confidence, seed)
    return fit


def _log_summary(result, y, pred, weighted: bool, confidence: float) -> dict:
    # In the order fits.json has always had them.
    return {
        "weighted": weighted,
        "r2_log": _r2(y, pred),
        "r2": _r2(np.exp(y), np.exp(pred)),
        "confidence": confidence,
        "aic": float(result.aic),
        "bic": float(result.bic),
    }


def _se(data: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(data["qid_se"], errors="coerce").to_numpy(float)


def _fit_se(data, predict, params, loss, starts, seed, bootstrap, fixed) -> dict:
    """The "se" likelihood: qid ~ Normal(law, (1 + phi^2) qid_se^2 + (s law)^2) over every
    cell (minimize.se_variance).
    Why linear space: the paired per-text noise of a cell's QiD is additive and Gaussian (a
    mean over texts), and a cell at the noise floor can be negative; log(qid) drops those
    cells, so only the upward fluctuations survive there and the exponents are biased (the
    bit width's toward flat). A censored (Tobit) model in log space would still assume a
    log-normal noise the paired mean does not have. phi and s ("excess", fitted by maximum
    likelihood, both 0 when the standard errors explain the scatter) keep cells with tiny
    standard errors from claiming a precision that the law (s, relative) and one rounding of
    one checkpoint (phi, in units of se) lack."""
    q, se = data["qid"].to_numpy(float), _se(data)
    result, (phi, s), scale = minimize_se(predict, params, q, se, loss, starts, seed)
    mu = np.exp(predict(result.params))
    pos = (q > 0) & (mu > 0)
    fit = {
        "result": result,
        "likelihood": "se",
        "n_nonpositive": int((q <= 0).sum()),
        "excess": {"phi": phi, "s": s},
        "weighted": True,
        "r2_log": _r2(np.log(q[pos]), np.log(mu[pos])),
        "r2": _r2(q, mu),
        "aic": float(result.aic),
        "bic": float(result.bic),
        "loss": loss,
        **({"huber_scale": scale} if scale is not None else {}),
    }
    if bootstrap > 0 and "log_k_0" in result.params:
        v = result.params
        # bootstrap_se's order: log k, then the free exponents among alpha, beta, gamma.
        free = [n for n in DRAW_NAMES[1:] if n not in fixed]
        start = np.array([v["log_k_0"].value] + [v[n].value for n in free])
        sd = np.sqrt(se_variance(mu, se, (phi, s)))
        fit["draws"] = bootstrap_se(data, sd, start, fixed, bootstrap, seed, scale)
    return fit


def loss16_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint and eval set: loss_16 repeats across methods and bit widths."""
    keys = [c for c in ("suite", "size", "step", "eval_set") if c in table.columns]
    keys = keys if {"size", "step"} <= set(keys) else ["n_params", "tokens"]
    return table.groupby(keys, sort=True, as_index=False)[["n_params", "tokens", "loss_16"]].first()


def fit_loss16(table: pd.DataFrame, confidence: float = 0.95) -> dict:
    """Eq. (3) on the 16-bit losses, least squares on log loss from a grid of starting points
    (the law is not linear in its parameters, and Nc is poorly conditioned when aN is small)."""
    data = loss16_table(table)
    data = data[np.isfinite(data.loss_16) & (data.loss_16 > 0)]
    if data.n_params.nunique() < 2 or data.tokens.nunique() < 2 or len(data) < 5:
        raise QidError("Eq. (3) needs at least 2 model sizes, 2 token counts and 5 losses")
    y = np.log(data.loss_16.to_numpy(float))
    log_n, log_d = np.log(data.n_params.to_numpy(float)), np.log(data.tokens.to_numpy(float))

    def residual(p):
        v = p.valuesdict()
        return log_loss16(v["log_nc"], v["log_dc"], v["alpha_n"], v["alpha_d"], log_n, log_d) - y

    best = None
    for alpha_d in (0.1, 0.3, 0.6, 1.0):
        for ratio in (0.05, 0.3, 1.0):
            # Start where each term is half of loss^(1/aD) at the data's centre.
            half = np.log(0.5) + y.mean() / alpha_d
            p = lmfit.Parameters()
            p.add("log_nc", value=log_n.mean() + half / ratio, min=-200, max=400)
            p.add("log_dc", value=log_d.mean() + half, min=-200, max=400)
            p.add("alpha_n", value=ratio * alpha_d, min=1e-4, max=5)
            p.add("alpha_d", value=alpha_d, min=1e-3, max=5)
            result = lmfit.minimize(residual, p, method="leastsq")
            if best is None or result.chisqr < best.chisqr:
                best = result
    pred = y + best.residual
    t = float(stats.t.ppf(0.5 + confidence / 2, max(1, len(y) - 4)))
    p = best.params
    return {
        "n_points": len(y),
        "params": {
            "nc": _param(p["log_nc"].value, p["log_nc"].stderr, t, log=True),
            "dc": _param(p["log_dc"].value, p["log_dc"].stderr, t, log=True),
            "alpha_n": _param(p["alpha_n"].value, p["alpha_n"].stderr, t),
            "alpha_d": _param(p["alpha_d"].value, p["alpha_d"].stderr, t),
        },
        "r2_log": _r2(y, pred),
        "rmse_log": float(np.sqrt(np.mean(best.residual**2))),
        "aic": float(best.aic),
        "bic": float(best.bic),
        "confidence": confidence,
        "range": {c: [float(data[c].min()), float(data[c].max())] for c in ("n_params", "tokens")},
    }
