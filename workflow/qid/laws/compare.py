"""Rival law forms (laws.forms) fitted side by side on the same rows (fits.json["compare"]).

Each form is fitted in log space by lmfit (weighted and robust as `fit_law`: same weights, same
loss), on the same usable rows, so its AIC and BIC compare across forms. Its held-out error is
the RMSE of log QiD on rows left out of the fit: each model size in turn, the last steps
(extrapolation in D), and each bit width in turn where there are at least three. `best` is the
form with the lowest held-out error; `comparable` the forms whose held-out mean squared error is
within one standard error (over folds) of the best's: the one-standard-error rule of
cross-validation (Hastie et al., Elements of Statistical Learning, Sec. 7.10), i.e. forms the
held-out data cannot tell apart; `simplest` the comparable form with the fewest parameters.
The comparable forms' spread is what Table 1 and Fig. 1 show.
"""

from __future__ import annotations

import lmfit
import numpy as np
import pandas as pd
from scipy import stats

from qid.laws.fit import _param, _r2, fitted_range, log_weights, usable
from qid.laws.forms import FORMS, Form, covariate, log_qid, values
from qid.laws.minimize import minimize

ERROR = "RMSE of log QiD on held-out rows (root mean square over folds of each fold's RMSE)"
RULE = "held-out MSE within one standard error (over folds) of the best form's"
RUN_KEYS = ("suite", "size", "schedule")  # what tells one training run from another


def lr_relative(table: pd.DataFrame) -> pd.Series:
    """lr / lr_max, lr_max the highest lr of the checkpoint's own run (suite, size, schedule
    where the table has them, else its N) up to that checkpoint: 1 during warmup and at the
    peak, below 1 only once the schedule decays (the decay is what Catalan-Tatjer et al. tie
    to QiD, not the warmup), 0 where it decayed to 0."""
    keys = [c for c in RUN_KEYS if c in table.columns] or ["n_params"]
    frame = table[keys + ["tokens"]].assign(lr=pd.to_numeric(table["lr"], errors="coerce"))
    frame = frame.reset_index(drop=True).sort_values("tokens", kind="stable")
    peak = frame.groupby(keys, dropna=False)["lr"].cummax().sort_index()
    return pd.Series((frame["lr"].sort_index() / peak).to_numpy(), index=table.index)


def _inverted(p: dict) -> dict:
    """A parameter's reciprocal (gP = 1 / inv_gP): the interval inverts where it excludes 0,
    else it is unbounded (-inf, inf), which fits.json writes as nulls."""
    v, se, lo, hi = (p[k] for k in ("value", "stderr", "ci_low", "ci_high"))
    with np.errstate(divide="ignore"):
        bounds = (1 / hi, 1 / lo) if lo * hi > 0 else (-np.inf, np.inf)
        return {
            "value": float(1 / v) if v else float("inf"),
            "stderr": float(se / v**2) if v else float("inf"),
            "ci_low": float(bounds[0]),
            "ci_high": float(bounds[1]),
        }


def fit_form(
    data: pd.DataFrame,
    form: Form,
    confidence: float = 0.95,
    weighted: bool = True,
    loss: str = "linear",
) -> dict:
    """One form on usable rows (finite, positive QiD; `lr_rel` for the lr form), JSON-able.
    A parameter whose column does not vary is fixed at 0 and named in "fixed", as in fit_law."""
    fixed = [name for name, (col, _, _) in form.terms.items() if data[col].nunique() < 2]
    n_free = len(form.terms) - len(fixed) + 1
    if len(data) <= n_free:
        return {"n_points": len(data), "skipped": f"{len(data)} rows for {n_free} parameters"}
    y = np.log(data["qid"].to_numpy(float))
    weights = log_weights(data) if weighted else None
    w = np.ones_like(y) if weights is None else weights / weights.mean()
    x = {name: covariate(data[col], kind) for name, (col, kind, _) in form.terms.items()}
    params = lmfit.Parameters()
    params.add(f"log_{form.coef}", value=float(y.mean()))
    for name in form.terms:
        params.add(name, value=0.0 if name in fixed else 0.5, vary=name not in fixed)

    def predict(p) -> np.ndarray:
        terms = (sign * p[n].value * x[n] for n, (_, _, sign) in form.terms.items())
        return p[f"log_{form.coef}"].value + sum(terms)

    result, scale = minimize(lambda p: w * (predict(p) - y), params, loss)
    t = float(stats.t.ppf(0.5 + confidence / 2, max(1, len(y) - n_free)))
    coef = result.params[f"log_{form.coef}"]
    out = {form.coef: _param(coef.value, coef.stderr, t, log=True)}
    for name in form.terms:
        if name not in fixed:
            out[name] = _param(result.params[name].value, result.params[name].stderr, t)
            if name in form.inverted:
                out[form.inverted[name]] = _inverted(out[name])
    return {
        "n_points": len(y),
        "equation": form.equation,
        "params": out,
        "fixed": {name: 0.0 for name in fixed},
        "r2_log": _r2(y, predict(result.params)),
        "aic": float(result.aic),
        "bic": float(result.bic),
        "confidence": confidence,
        "loss": loss,
        **({"huber_scale": scale} if scale is not None else {}),
        "range": fitted_range(data),
    }


def folds(data: pd.DataFrame, holdout: float = 0.2) -> list[tuple[str, str, pd.Series]]:
    """(family, name, held-out mask): each size; the last `holdout` of the steps; each bit
    width where there are at least three (with two, one left is a single width: no gamma)."""
    out = [("size", f"n_params={n:.6g}", data.n_params == n) for n in sorted(set(data.n_params))]
    tokens = np.sort(data["tokens"].unique())
    last = tokens[len(tokens) - max(1, int(round(holdout * len(tokens)))) :]
    out.append(("steps", f"last {len(last)} of {len(tokens)} steps", data.tokens.isin(last)))
    if data["bits"].nunique() >= 3:
        out += [("bits", f"bits={b:g}", data.bits == b) for b in sorted(set(data.bits))]
    return out


def held_out(data: pd.DataFrame, form: Form, holdout: float = 0.2, **options) -> dict:
    """The form's held-out error on `data` (usable rows): per fold, per family, overall."""
    rows = []
    for family, name, mask in folds(data, holdout):
        fit = fit_form(data[~mask], form, **options)
        if "params" not in fit:
            rows.append({"family": family, "held_out": name, "skipped": fit["skipped"]})
            continue
        test = data[mask]
        pred = log_qid(form, values(fit), {c: test[c].to_numpy(float) for c in form.columns})
        err = pred - np.log(test["qid"].to_numpy(float))
        rows.append(
            {
                "family": family,
                "held_out": name,
                "n_train": fit["n_points"],
                "n_test": len(test),
                "rmse_log": float(np.sqrt(np.mean(err**2))),
            }
        )
    mse = np.array([r["rmse_log"] ** 2 for r in rows if "rmse_log" in r])
    by_family = {}
    for family in dict.fromkeys(r["family"] for r in rows):
        sq = [r["rmse_log"] ** 2 for r in rows if r["family"] == family and "rmse_log" in r]
        by_family[family] = float(np.sqrt(np.mean(sq))) if sq else None
    return {
        "folds": rows,
        "by_family": by_family,
        "rmse_log": float(np.sqrt(mse.mean())) if len(mse) else None,
        "mse": float(mse.mean()) if len(mse) else None,
        "mse_se": float(mse.std(ddof=1) / np.sqrt(len(mse))) if len(mse) > 1 else None,
    }


def _lr_skipped(table: pd.DataFrame, data: pd.DataFrame) -> str | None:
    """Why the lr form cannot be fitted on these rows, or None."""
    if "lr" not in table.columns:
        return "the table has no column lr (the learning rate at each checkpoint)"
    known = int(np.isfinite(data["lr_rel"]).sum())
    if known < len(data):
        return f"lr is known for {known} of {len(data)} rows (the forms share their rows)"
    if data["lr_rel"].nunique() < 2:
        return "lr / lr_max does not vary across the rows"
    return None


def simplest(fits: dict, comparable: list[str]) -> str | None:
    """The comparable form with the fewest free parameters (ties: the lower held-out error).
    A nested form (lr with delta ~ 0 is Eq. 8) can edge out the form that generated the data
    by noise alone; reported values (gP beside inv_gP) are not free parameters."""
    free = {n: len(FORMS[n].terms) - len(fits[n]["fixed"]) + 1 for n in comparable}
    return min(comparable, key=lambda n: (free[n], fits[n]["held_out"]["mse"]), default=None)


def compare_forms(
    table: pd.DataFrame,
    confidence: float = 0.95,
    weighted: bool = True,
    loss: str = "linear",
    holdout: float = 0.2,
) -> dict:
    """Every form in laws.forms.FORMS on the usable rows of `table` (one method and eval set,
    as fit_all selects them): {form: fit with "held_out"}, "best", "comparable", "simplest",
    "rows", and the error measure and comparability rule in words."""
    table = table.assign(lr_rel=lr_relative(table)) if "lr" in table.columns else table
    data = table[usable(table)]
    options = {"confidence": confidence, "weighted": weighted, "loss": loss}
    out: dict = {}
    for name, form in FORMS.items():
        why = _lr_skipped(table, data) if "lr_rel" in form.columns else None
        if why:
            out[name] = {"skipped": why}
            continue
        fit = fit_form(data, form, **options)
        if "params" in fit:
            fit["held_out"] = held_out(data, form, holdout, **options)
        out[name] = fit
    scored = {n: f["held_out"] for n, f in out.items() if "held_out" in f}
    scored = {n: h for n, h in scored.items() if h["mse"] is not None}
    best = min(scored, key=lambda n: scored[n]["mse"]) if scored else None
    margin = (scored[best]["mse_se"] or 0.0) if best else 0.0
    comparable = [n for n in scored if scored[n]["mse"] <= scored[best]["mse"] + margin]
    return {
        **out,
        "best": best,
        "comparable": comparable,
        "simplest": simplest(out, comparable),
        "rows": len(data),
        "error": ERROR,
        "rule": RULE,
    }


def comparable_laws(compare: dict | None) -> dict[str, tuple[Form, dict[str, float]]]:
    """{form: (Form, parameter values)} of the comparable forms, for projections (Table 1,
    Fig. 1); {} for fits without a comparison. The lr form projects a fully decayed run."""
    if not compare:
        return {}
    return {
        name: (FORMS[name], values(compare[name]))
        for name in compare.get("comparable", [])
        if "params" in compare.get(name, {})
    }
