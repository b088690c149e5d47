"""The rival law forms side by side (issue 13): held-out errors and predictions per form, from
`qid fit`'s fits["compare"] (laws.compare); nothing is fitted here."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from qid.figures.style import stale_fits
from qid.laws import FORMS, usable
from qid.laws.compare import lr_relative
from qid.laws.forms import log_qid, values

FAMILIES = {"all": "all folds", "size": "a size left out", "steps": "last steps left out"}
FAMILIES["bits"] = "a bit width left out"


def _errors(ax: plt.Axes, compare: dict, fitted: list[str]) -> None:
    """Grouped bars: the held-out RMSE of log QiD per form and fold family."""
    width = 0.8 / len(FAMILIES)
    for i, (family, label) in enumerate(FAMILIES.items()):
        heights = [
            compare[f]["held_out"]["rmse_log"]
            if family == "all"
            else compare[f]["held_out"]["by_family"].get(family)
            for f in fitted
        ]
        x = np.arange(len(fitted)) + (i - (len(FAMILIES) - 1) / 2) * width
        ax.bar(x, [np.nan if h is None else h for h in heights], width, label=label)
    names = [f"{f}\n(best)" if f == compare.get("best") else f for f in fitted]
    ax.set_xticks(np.arange(len(fitted)), names)
    ax.set(yscale="log", ylabel="held-out RMSE of log QiD")
    ax.legend(fontsize=7)
    ax.set_title("held-out error per form", fontsize=9)


def _predictions(ax: plt.Axes, rows: pd.DataFrame, compare: dict, fitted: list[str]) -> None:
    """Each form's prediction against the measured QiD, over the cells it was fitted on."""
    columns = {c: rows[c].to_numpy(float) for c in ("n_params", "tokens", "bits")}
    if "lr" in rows.columns:
        columns["lr_rel"] = lr_relative(rows).to_numpy(float)
    measured = rows["qid"].to_numpy(float)
    for form in fitted:
        pred = np.exp(log_qid(FORMS[form], values(compare[form]), columns))
        ax.scatter(measured, pred, s=8, alpha=0.6, label=form)
    lo, hi = measured.min() / 1.5, measured.max() * 1.5
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
    ax.set(xscale="log", yscale="log", xlabel="measured QiD (nats)", ylabel="predicted QiD")
    ax.legend(fontsize=7)
    ax.set_title("fitted forms against the data", fontsize=9)


def forms_compare(table: pd.DataFrame, fits: dict) -> plt.Figure:
    """Left: each form's held-out error (all folds and per family); right: its in-sample
    predictions against the measured QiD. Forms not fitted are named with why."""
    title = "Rival forms of the QiD law, fitted side by side"
    if "compare" not in fits:
        return stale_fits(title, "compare")
    compare = fits["compare"]
    fitted = [f for f in FORMS if "held_out" in compare.get(f, {})]
    rows = table
    for column in ("method", "eval_set"):  # the rows the fits saw (their method and eval set)
        if fits.get("meta", {}).get(column) is not None:
            rows = rows[rows[column] == fits["meta"][column]]
    rows = rows[usable(rows)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    _errors(axes[0], compare, fitted)
    _predictions(axes[1], rows, compare, fitted)
    skipped = [f"{f}: {compare[f]['skipped']}" for f in FORMS if "skipped" in compare.get(f, {})]
    note = f"best {compare.get('best')}; comparable {', '.join(compare.get('comparable', []))}"
    fig.suptitle(f"{title} ({note})" + ("\nnot fitted - " + "; ".join(skipped) if skipped else ""))
    return fig
