"""The paper's QiD scaling laws as code, and their lmfit fits.

Eq. (5) qid = b D^beta,  Eq. (6) qid = a / N^alpha,  Eq. (7) qid = c / P^gamma,
Eq. (8) qid = k D^beta / (N^alpha P^gamma).
All are fitted in log space, where they are linear: log qid = log coef + beta log D - ...
A single-factor law shares its exponent across the data and gives each combination of the other
two factors its own coefficient (e.g. Eq. 5: one b per (N, P), one beta for all).

Where the table has `qid_se` (the paired per-text standard error of each cell), residuals are
weighted by qid / qid_se, the inverse of log(qid)'s standard error: cells whose QiD sits at the
noise floor (3-4 bits on small models) then do not outvote the cells that carry the signal.

Beyond the paper: a Huber loss and several starting points (`loss`, `starts`), bootstrap
percentile intervals (`bootstrap`: closed-form weighted least squares per resample, since the
log-space law is linear), per-bit-width and per-method fits (`fit_by`), held-out validation
(`validate`), Eq. (3) for the 16-bit loss (`Loss16Law`, `fit_loss16`) and the predicted
quantized loss (`loss_q`). Every fit records the range of N, D and P it saw (`range`), so that
`qid diagnose` can refuse to extrapolate.
"""

from __future__ import annotations

from dataclasses import dataclass

import lmfit
import numpy as np
import pandas as pd
from scipy import stats

from qid import QidError
from qid.integrity import flagged_checkpoints


@dataclass(frozen=True)
class UnifiedLaw:
    """Eq. (8). With gamma = 0 it is a law for one bit width (P drops out)."""

    k: float
    alpha: float
    beta: float
    gamma: float = 0.0

    def qid(self, n, tokens, bits=1.0):
        """Predicted QiD (nats) of a model with `n` non-embedding parameters trained on `tokens`
        tokens, quantized to `bits` bits."""
        return (
            self.k
            * np.power(tokens, self.beta)
            / (np.power(n, self.alpha) * np.power(bits, self.gamma))
        )

    def tokens_for(self, qid, n, bits=1.0):
        """Training tokens at which the model reaches `qid` (the inverse; Table 1's question)."""
        return np.power(
            np.asarray(qid) * np.power(n, self.alpha) * np.power(bits, self.gamma) / self.k,
            1.0 / self.beta,
        )


# The paper's fit on GPTQ-quantized Pythia (Fig. 6); see ../shared/facts.md.
PUBLISHED = UnifiedLaw(k=0.017, alpha=0.2261, beta=0.5251, gamma=5.4967)
# What it was fitted on (facts.md): Pythia 160m..12b non-embedding parameters, steps 512..98000
# of 2,097,152 tokens, GPTQ at 2..4 bits.
PUBLISHED_RANGE = {
    "n_params": [85_056_000.0, 11_327_027_200.0],
    "tokens": [512 * 2_097_152.0, 98_000 * 2_097_152.0],
    "bits": [2.0, 4.0],
}

# law name -> coefficient name, {exponent: (column, sign in log space)}, grouping columns
LAWS: dict[str, tuple[str, dict[str, tuple[str, int]], list[str]]] = {
    "unified": ("k", {"beta": ("tokens", 1), "alpha": ("n_params", -1), "gamma": ("bits", -1)}, []),
    "tokens": ("b", {"beta": ("tokens", 1)}, ["n_params", "bits"]),
    "size": ("a", {"alpha": ("n_params", -1)}, ["tokens", "bits"]),
    "bits": ("c", {"gamma": ("bits", -1)}, ["n_params", "tokens"]),
}
REQUIRED = ["tokens", "n_params", "bits", "qid"]


def usable(table: pd.DataFrame) -> pd.Series:
    """Rows a log-space fit can use: finite, positive QiD (the rest are counted, not hidden)."""
    q = pd.to_numeric(table["qid"], errors="coerce")
    return np.isfinite(q) & (q > 0)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(1 - ((y - pred) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def _param(value: float, stderr: float | None, t: float, log: bool = False) -> dict:
    stderr = float("nan") if stderr is None else float(stderr)
    lo, hi = value - t * stderr, value + t * stderr
    if log:  # fitted as log(coef): report the coefficient, its delta-method stderr, exp'd CI
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


LOSSES = ("linear", "huber")
HUBER_T = 1.345  # Huber's tuning constant: 95% efficiency when the errors are normal


def fitted_range(data: pd.DataFrame) -> dict:
    """[min, max] of N, D and P in the rows a fit used: the law's domain of validity."""
    return {c: [float(data[c].min()), float(data[c].max())] for c in ("n_params", "tokens", "bits")}


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


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray, scale: float | None) -> np.ndarray | None:
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
        coef = _wls(x[rows], y[rows], weights[rows], scale)
        if coef is None:
            continue
        values = dict(zip(free, coef[1:], strict=True))
        draws[b] = [np.exp(coef[0])] + [values.get(n, 0.0) for n in names]
    return draws


DRAW_NAMES = ["k", "alpha", "beta", "gamma"]


def _bootstrap_block(draws: np.ndarray, fixed: list[str], confidence: float, seed: int) -> dict:
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


def fit_law(
    table: pd.DataFrame,
    law: str,
    confidence: float = 0.95,
    weighted: bool = True,
    loss: str = "linear",
    starts: int = 1,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict:
    """Fit one law to the usable rows of `table`; the result is plain JSON-able data.
    `loss="huber"` downweights outlying cells; `starts` > 1 tries jittered starting points;
    `bootstrap` > 0 (unified law only) adds percentile intervals under "bootstrap"."""
    coef, exponents, group_cols = LAWS[law]
    ok = usable(table)
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

    y = np.log(data["qid"].to_numpy(float))
    weights = log_weights(data) if weighted else None
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

    result, scale = minimize(lambda p: w * (predict(p) - y), params, loss, starts, seed)
    pred = predict(result.params)
    t = float(stats.t.ppf(0.5 + confidence / 2, max(1, len(y) - n_free)))
    fitted = {
        name: _param(result.params[name].value, result.params[name].stderr, t)
        for name in exponents
        if name not in fixed
    }
    coefficients = []
    if group_cols:
        keys = data.groupby(group_cols, sort=True).size().index
        for g, key in enumerate(keys):
            key = key if isinstance(key, tuple) else (key,)
            p = result.params[f"log_{coef}_{g}"]
            coefficients.append(
                {
                    **{c: float(v) for c, v in zip(group_cols, key, strict=True)},
                    **_param(p.value, p.stderr, t, log=True),
                }
            )
    else:
        p = result.params[f"log_{coef}_0"]
        fitted = {coef: _param(p.value, p.stderr, t, log=True), **fitted}
    fit = {
        **out,
        "params": fitted,
        "fixed": {name: 0.0 for name in fixed},
        "coefficients": coefficients,
        "weighted": weights is not None,
        "r2_log": _r2(y, pred),
        "r2": _r2(np.exp(y), np.exp(pred)),
        "confidence": confidence,
        "aic": float(result.aic),
        "bic": float(result.bic),
        "loss": loss,
        **({"huber_scale": scale} if scale is not None else {}),
        "range": fitted_range(data),
    }
    if law == "unified" and result.covar is not None:
        # Joint covariance (log k and the exponents) for sampling predictions when there is no
        # bootstrap: log k and the exponents are strongly correlated, so stderrs alone overstate.
        names = [n.replace("log_k_0", "log_k") for n in result.var_names]
        fit["covariance"] = {"names": names, "matrix": np.asarray(result.covar).tolist()}
    if law == "unified" and bootstrap > 0:
        draws = bootstrap_unified(data, w, fixed, bootstrap, seed, scale)
        fit["bootstrap"] = _bootstrap_block(draws, fixed, confidence, seed)
    return fit


def select(table: pd.DataFrame, column: str, value: str | None) -> pd.DataFrame:
    if value is not None:
        if value not in set(table[column]):
            raise QidError(
                f"{column} {value!r} is not in the table "
                f"(present: {', '.join(map(str, sorted(set(table[column]))))})"
            )
        return table[table[column] == value]
    values = sorted(set(table[column]))
    if len(values) > 1:
        raise QidError(
            f"the table holds several values of {column} ({', '.join(map(str, values))})"
            f": choose one with --{column.replace('_', '-')}"
        )
    return table


def _bits_key(bits: float) -> str:
    return str(int(bits)) if float(bits).is_integer() else str(bits)


def fit_by(
    table: pd.DataFrame,
    column: str,
    method: str | None = None,
    eval_set: str | None = None,
    **kwargs,
) -> dict[str, dict]:
    """Eq. (8) fitted separately per value of `column` ("method" or "bits"): {value: fit}.
    With one bit width per fit gamma is fixed to 0 (P drops out), as for Table 1's 3- and
    4-bit columns and Fig. 9. `kwargs` go to `fit_law`."""
    for col, value in (("method", method), ("eval_set", eval_set)):
        if col in table.columns and col != column:
            table = select(table, col, value)
    keys = _bits_key if column == "bits" else str
    return {
        keys(value): fit_law(table[table[column] == value], "unified", **kwargs)
        for value in sorted(set(table[column]))
    }


def fit_all(
    table: pd.DataFrame,
    method: str | None = None,
    eval_set: str | None = None,
    confidence: float = 0.95,
    weighted: bool = True,
    loss: str = "linear",
    starts: int = 1,
    bootstrap: int = 0,
    seed: int = 0,
    validation: bool = False,
) -> dict:
    """Eq. (5)-(8) on one method and eval set; with several bit widths also Eq. (8) per bit
    width ("by_bits"); Eq. (3) on the 16-bit losses ("loss16") where the table has them;
    held-out errors ("validation") when asked. meta.range is the unified fit's domain.
    Rows whose checkpoint is flagged (column `flag`, qid.integrity) or whose loss collapsed
    (column `status`, qid.aggregate; "excluded" has "collapsed" where the table has `status`)
    are left out of every fit and named in "excluded"."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise QidError(f"table lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    for column, value in (("method", method), ("eval_set", eval_set)):
        if column in table.columns:
            table = select(table, column, value)
    if table.empty:
        raise QidError("no rows to fit")
    table, collapsed = drop_collapsed(table)
    table, flagged = drop_flagged(table)
    options = {"confidence": confidence, "weighted": weighted, "loss": loss, "starts": starts}
    fits = {"unified": fit_law(table, "unified", **options, bootstrap=bootstrap, seed=seed)}
    fits.update({law: fit_law(table, law, **options) for law in LAWS if law != "unified"})
    if "params" not in fits["unified"]:
        raise QidError(f"cannot fit the unified law: {fits['unified']['skipped']}")
    if table["bits"].nunique() > 1:
        fits["by_bits"] = fit_by(table, "bits", **options, bootstrap=bootstrap, seed=seed)
    if "loss_16" in table.columns:
        try:
            fits["loss16"] = fit_loss16(table, confidence)
        except QidError as err:
            fits["loss16"] = {"skipped": str(err)}
    if validation:
        fits["validation"] = validate(table, weighted=weighted, loss=loss)
    fits["meta"] = {
        "method": method,
        "eval_set": eval_set,
        "rows": len(table),
        "space": "log",
        "confidence": confidence,
        "weighted": fits["unified"]["weighted"],
        "loss": loss,
        "bootstrap": bootstrap,
        "range": fits["unified"]["range"],
    }
    fits["excluded"] = {"flagged": flagged}
    if "status" in table.columns:  # a table from qid aggregate, which marks collapsed cells
        fits["excluded"]["collapsed"] = collapsed
    return fits


CELL = ["suite", "size", "step", "method", "bits", "eval_set"]


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


def unified_from_fit(fit: dict) -> UnifiedLaw:
    p = fit["params"]
    return UnifiedLaw(
        k=p["k"]["value"],
        alpha=p.get("alpha", {"value": 0.0})["value"],
        beta=p.get("beta", {"value": 0.0})["value"],
        gamma=p.get("gamma", {"value": 0.0})["value"],
    )


# The published law in the shape of a fit (no uncertainty: the paper gives none).
PUBLISHED_FIT = {
    "params": {name: {"value": getattr(PUBLISHED, name)} for name in DRAW_NAMES},
    "range": PUBLISHED_RANGE,
    "source": "published (Ouyang et al. 2024, Fig. 6)",
}


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
    """Percentile interval over the first axis (the draws)."""
    q = 50 * (1 - confidence), 50 * (1 + confidence)
    return np.nanpercentile(values, q[0], axis=0), np.nanpercentile(values, q[1], axis=0)


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


@dataclass(frozen=True)
class Loss16Law:
    """Eq. (3): loss16(N, D) = ((Nc/N)^(aN/aD) + Dc/D)^aD, the 16-bit loss in nats of a model
    with N non-embedding parameters trained on D tokens (no irreducible term, as in the paper)."""

    nc: float
    dc: float
    alpha_n: float
    alpha_d: float

    def loss(self, n, tokens):
        return np.exp(
            _log_loss16(
                np.log(self.nc),
                np.log(self.dc),
                self.alpha_n,
                self.alpha_d,
                np.log(n),
                np.log(tokens),
            )
        )


def _log_loss16(log_nc, log_dc, alpha_n, alpha_d, log_n, log_d):
    # logaddexp keeps the sum of the two terms finite when either is huge (Nc ~ 1e19).
    return alpha_d * np.logaddexp(alpha_n / alpha_d * (log_nc - log_n), log_dc - log_d)


# Fig. 7's fit on Pythia (facts.md): ((4.74e19 / N)^(0.045 / 0.399) + 7.63e10 / D)^0.399.
PUBLISHED_LOSS16 = Loss16Law(nc=4.74e19, dc=7.63e10, alpha_n=0.045, alpha_d=0.399)


def loss_q(
    n, tokens, bits, qid_law: UnifiedLaw = PUBLISHED, loss_law: Loss16Law = PUBLISHED_LOSS16
):
    """Predicted loss of the quantized model, Loss_q = Loss_16 + QiD (Sec. 3.5, Fig. 7)."""
    return loss_law.loss(n, tokens) + qid_law.qid(n, tokens, bits)


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
        return _log_loss16(v["log_nc"], v["log_dc"], v["alpha_n"], v["alpha_d"], log_n, log_d) - y

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


def loss16_from_fit(fit: dict) -> Loss16Law:
    p = fit["params"]
    return Loss16Law(*(p[name]["value"] for name in ("nc", "dc", "alpha_n", "alpha_d")))
