"""QiD against D per learning-rate schedule (issue 13): does QiD follow the tokens or the decay?

Catalan-Tatjer et al. 2025 (arXiv 2510.06213) see QiD flat while the rate is high and rising
once it decays; under cosine the decay and D move together, under WSD they part. Drawn from the
QiD table's `lr`, `schedule` and `decay_step` columns (qid.schedule), a placeholder where the
table holds fewer than two schedules.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from qid.figures.style import (
    decade_ticks,
    fit_title,
    listing,
    model_labels,
    placeholder,
    source_name,
)

TITLE = "QiD vs training tokens per learning-rate schedule"
DASHES = {"cosine": "-", "wsd": "--", "constant": ":"}


def lr_schedule(table: pd.DataFrame, fits: dict) -> plt.Figure:
    """Top row: QiD against D per bit width, one line per size and schedule (bars: 95% CI);
    bottom row: the learning rate at those checkpoints. Vertical lines: each schedule's decay
    onset in tokens (none for a constant rate)."""
    rows = _rows(table, fits)
    held = sorted(set(rows.get("schedule", pd.Series(dtype=object)).dropna()) - {""})
    if len(held) < 2:
        return placeholder(
            TITLE,
            "the schedule figure needs QiD under at least 2 learning-rate schedules "
            f"(training.schedule: config/schedules.yaml); {source_name(table)} holds "
            f"{listing(held)}",
        )
    widths = sorted(rows.bits.unique())
    fig, axes = plt.subplots(
        2, len(widths), figsize=(3.4 * len(widths), 5.6), squeeze=False, sharex=True
    )
    # One colour per size: the schedules' suites share their sizes (config/schedules.yaml).
    rows = rows.assign(model=model_labels(rows.drop(columns="suite", errors="ignore")))
    labels = list(dict.fromkeys(rows.model))
    palette = dict(zip(labels, sns.color_palette(n_colors=len(labels)), strict=True))
    for j, bits in enumerate(widths):
        top, bottom = axes[0, j], axes[1, j]
        for (model, schedule), part in rows[rows.bits == bits].groupby(["model", "schedule"]):
            style = {"color": palette[model], "ls": DASHES.get(schedule, "-.")}
            top.errorbar(
                part.tokens,
                part.qid,
                yerr=1.96 * part.qid_se if "qid_se" in part else None,
                marker="o",
                ms=3.5,
                capsize=2,
                label=f"{model}, {schedule}",
                **style,
            )
            bottom.plot(part.tokens, part.lr, marker="o", ms=3, **style)
        for schedule, onset in _onsets(rows).items():
            for ax in (top, bottom):
                ax.axvline(onset, color="0.4", lw=1, ls=DASHES.get(schedule, "-."))
            top.annotate(
                f"{schedule} decays",
                (onset, 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color="0.3",
            )
        top.axhline(0, color="gray", lw=0.8, ls=":")
        top.set(title=f"{bits} bits", xscale="log")
        bottom.set(xscale="log", xlabel="training tokens D")
        decade_ticks(bottom)
    axes[0, 0].set_ylabel("QiD (nats)")
    axes[1, 0].set_ylabel("learning rate at the checkpoint")
    axes[0, -1].legend(fontsize=6.5, loc="best")
    fig.suptitle(f"{TITLE} ({fit_title(fits)}; bars: 95% CI)")
    fig.tight_layout()
    return fig


def _rows(table: pd.DataFrame, fits: dict) -> pd.DataFrame:
    """The rows of the fit's method and eval set (all where the fits name none)."""
    meta = fits.get("meta", {})
    for column in ("method", "eval_set"):
        if meta.get(column) is not None and column in table.columns:
            table = table[table[column] == meta[column]]
    return table.sort_values(["n_params", "tokens"])


def _onsets(rows: pd.DataFrame) -> dict[str, float]:
    """Each schedule's decay onset in tokens: decay_step x tokens per step."""
    known = rows.dropna(subset=["decay_step"])
    known = known[known.schedule != ""]
    onset = known.decay_step * known.tokens / known.step
    return onset.groupby(known.schedule).median().to_dict()
