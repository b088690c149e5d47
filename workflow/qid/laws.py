"""The paper's QiD scaling laws as code, and their lmfit fits.

Eq. (5) qid = b D^beta,  Eq. (6) qid = a / N^alpha,  Eq. (7) qid = c / P^gamma,
Eq. (8) qid = k D^beta / (N^alpha P^gamma).
All are fitted in log space, where they are linear: log qid = log coef + beta log D - ...
A single-factor law shares its exponent across the data and gives each combination of the other
two factors its own coefficient (e.g. Eq. 5: one b per (N, P), one beta for all).

Where the table has `qid_se` (the paired per-text standard error of each cell), residuals are
weighted by qid / qid_se, the inverse of log(qid)'s standard error: cells whose QiD sits at the
noise floor (3-4 bits on small models) then do not outvote the cells that carry the signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import lmfit
import numpy as np
import pandas as pd
from scipy import stats

from qid import QidError


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


def fit_law(table: pd.DataFrame, law: str, confidence: float = 0.95, weighted: bool = True) -> dict:
    """Fit one law to the usable rows of `table`; the result is plain JSON-able data."""
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

    result = lmfit.minimize(lambda p: w * (predict(p) - y), params, method="leastsq")
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
    return {
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
    }


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


def fit_all(
    table: pd.DataFrame,
    method: str | None = None,
    eval_set: str | None = None,
    confidence: float = 0.95,
    weighted: bool = True,
) -> dict:
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise QidError(f"table lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    for column, value in (("method", method), ("eval_set", eval_set)):
        if column in table.columns:
            table = select(table, column, value)
    if table.empty:
        raise QidError("no rows to fit")
    fits = {law: fit_law(table, law, confidence, weighted) for law in LAWS}
    if "params" not in fits["unified"]:
        raise QidError(f"cannot fit the unified law: {fits['unified']['skipped']}")
    fits["meta"] = {
        "method": method,
        "eval_set": eval_set,
        "rows": len(table),
        "space": "log",
        "confidence": confidence,
        "weighted": fits["unified"]["weighted"],
    }
    return fits


def unified_from_fit(fit: dict) -> UnifiedLaw:
    p = fit["params"]
    return UnifiedLaw(
        k=p["k"]["value"],
        alpha=p.get("alpha", {"value": 0.0})["value"],
        beta=p.get("beta", {"value": 0.0})["value"],
        gamma=p.get("gamma", {"value": 0.0})["value"],
    )
