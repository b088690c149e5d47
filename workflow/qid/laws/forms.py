"""Rival law forms for QiD, side by side (issue 13): pure math, no data and no fitting.

- power: Eq. (8) of the paper, qid = k D^beta / (N^alpha P^gamma).
- exponential: Kumar et al. 2024 ("Scaling Laws for Precision", Eq. 2), precision entering
  exponentially: qid = C D^gD / N^gN exp(-P / gP). Fitted as inv_gP = 1 / gP (linear in log
  space, so no start values to guess); gP is reported beside it.
- lr: Eq. (8) times exp(-delta lr / lr_max), the learning rate at the checkpoint relative to the
  run's peak so far (1 during warmup: only the decay counts). Catalan-Tatjer et al. 2025
  (arXiv 2510.06213) find QiD rises as the learning rate decays; with delta > 0 QiD is higher
  where lr has decayed. An exponential in lr / lr_max (not a power of lr) stays finite where a
  schedule decays to 0, and delta = 0 is Eq. (8), so the comparison with `power` is nested.
  Projections assume a fully decayed run (lr = 0, factor 1).

Every form is linear in log space: log qid = log coef + sum(sign * param * covariate), where a
covariate is log(column) or the column itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Form:
    name: str
    coef: str  # the coefficient, fitted as its log and reported exponentiated
    # fitted parameter -> (column, "log" or "lin" covariate, sign in log space)
    terms: dict[str, tuple[str, str, int]]
    equation: str
    inverted: dict[str, str]  # fitted parameter -> the reported reciprocal's name

    @property
    def columns(self) -> list[str]:
        return [col for col, _, _ in self.terms.values()]

    @property
    def d_exponent(self) -> str:
        """The parameter multiplying log D (Table 1 inverts it)."""
        return next(p for p, (col, kind, _) in self.terms.items() if col == "tokens")


_POWER_TERMS = {
    "beta": ("tokens", "log", 1),
    "alpha": ("n_params", "log", -1),
    "gamma": ("bits", "log", -1),
}

FORMS: dict[str, Form] = {
    "power": Form("power", "k", _POWER_TERMS, "k·D^β / (N^α·P^γ) (Eq. 8)", {}),
    "exponential": Form(
        "exponential",
        "C",
        {"gD": ("tokens", "log", 1), "gN": ("n_params", "log", -1), "inv_gP": ("bits", "lin", -1)},
        "C·D^gD / N^gN · exp(-P/gP) (Kumar et al. 2024, Eq. 2)",
        {"inv_gP": "gP"},
    ),
    "lr": Form(
        "lr",
        "k",
        {**_POWER_TERMS, "delta": ("lr_rel", "lin", -1)},
        "k·D^β / (N^α·P^γ) · exp(-δ·lr/lr_max)",
        {},
    ),
}


def covariate(values, kind: str) -> np.ndarray:
    values = np.asarray(values, float)
    return np.log(values) if kind == "log" else values


def log_qid(form: Form, params: dict[str, float], columns: dict[str, np.ndarray]) -> np.ndarray:
    """log QiD of `form` with fitted `params` ({name: value}, the coefficient as its value, not
    its log) at `columns` ({column: values}); a column a form needs but lacks counts as 0."""
    out = np.log(params[form.coef])
    for name, (col, kind, sign) in form.terms.items():
        x = columns.get(col)
        if x is not None:
            out = out + sign * params.get(name, 0.0) * covariate(x, kind)
    return np.asarray(out, float)


def qid(form: Form, params: dict[str, float], n, tokens, bits, lr_rel=0.0) -> np.ndarray:
    """Predicted QiD (nats); `lr_rel` = lr / lr_max (0: a fully decayed schedule)."""
    cols = {"n_params": n, "tokens": tokens, "bits": bits, "lr_rel": lr_rel}
    return np.exp(log_qid(form, params, cols))


def tokens_for(form: Form, params: dict[str, float], q, n, bits, lr_rel=0.0) -> np.ndarray:
    """Training tokens at which `form` reaches QiD `q` (Table 1's question): log D solves the
    log-linear form, log D = (log q - everything else) / the D exponent."""
    rest = log_qid(form, params, {"n_params": n, "bits": bits, "lr_rel": lr_rel})
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return np.exp((np.log(q) - rest) / params[form.d_exponent])


def values(fit: dict) -> dict[str, float]:
    """{parameter: value} of a fitted form (fits.json["compare"][form]), fixed ones included."""
    return {
        **{k: float(v) for k, v in fit.get("fixed", {}).items()},
        **{k: float(p["value"]) for k, p in fit["params"].items()},
    }
