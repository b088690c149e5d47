"""Fig. 7: Loss_q = Loss16 (Eq. 3) + QiD (Eq. 8) against the measured losses."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from qid.figures.style import (
    bits_palette,
    decade_ticks,
    fit_title,
    model_palette,
    model_rows,
    placeholder,
    source_name,
)
from qid.laws import loss16_from_fit, unified_from_fit


def fig7_loss_prediction(table: pd.DataFrame, fits: dict) -> plt.Figure:
    """Eq. (3) on the 16-bit losses, and Loss_q = Loss_16 + QiD against the measured Loss_q."""
    if "loss_16" not in table.columns or "loss_q" not in table.columns:
        return placeholder(
            "Fig. 7 - loss prediction",
            f"Fig. 7 needs the columns loss_16 and loss_q; {source_name(table)} has "
            f"{', '.join(table.columns)}",
        )
    rows = model_rows(table, fits)
    rows = rows[np.isfinite(rows.loss_16) & np.isfinite(rows.loss_q)]
    qid_law = unified_from_fit(fits["unified"])
    fitted = "params" in fits.get("loss16", {})
    loss_law = loss16_from_fit(fits["loss16"]) if fitted else None

    def loss16(n, d, measured):
        return loss_law.loss(n, d) if fitted else measured

    pred = loss16(rows.n_params, rows.tokens, rows.loss_16) + qid_law.qid(
        rows.n_params, rows.tokens, rows.bits
    )
    rows = rows.assign(predicted=np.asarray(pred, float))
    palette = model_palette(rows)
    widths = sorted(rows.bits.unique())
    fig, axes = plt.subplots(
        1, len(widths) + 2, figsize=(3.0 * (len(widths) + 2), 3.3), layout="constrained"
    )
    checkpoints = rows.drop_duplicates(["model", "tokens"])
    xs = np.geomspace(rows.tokens.min(), rows.tokens.max(), 50)
    panels = [(axes[0], "16-bit", checkpoints, "loss_16", None)]
    panels += [
        (ax, f"{b:g}-bit", rows[rows.bits == b], "loss_q", b)
        for ax, b in zip(axes[1:], widths, strict=False)
    ]
    for ax, name, part, column, bits in panels:
        for model, cells in part.groupby("model", sort=False):
            ax.scatter(cells.tokens, cells[column], color=palette[model], s=18, label=model)
            n = cells.n_params.iloc[0]
            if fitted:
                ys = loss_law.loss(n, xs) + (0 if bits is None else qid_law.qid(n, xs, bits))
                ax.plot(xs, ys, color=palette[model], lw=1)
            elif bits is not None:
                ax.plot(cells.tokens, cells.predicted, color=palette[model], lw=1)
        ax.set(xscale="log", xlabel="training tokens D", title=name)
        decade_ticks(ax)
    for ax in axes[1 : len(widths) + 1]:
        ax.sharey(axes[0])
    axes[0].set_ylabel("loss (nats)")
    parity = axes[-1]
    sns.scatterplot(
        data=rows,
        x="predicted",
        y="loss_q",
        hue="bits",
        style="bits",
        palette=bits_palette(widths),
        ax=parity,
        s=18,
        legend="full",
    )
    lims = [
        min(rows.predicted.min(), rows.loss_q.min()),
        max(rows.predicted.max(), rows.loss_q.max()),
    ]
    parity.plot(lims, lims, color="gray", lw=0.8, ls=":")
    rmse = float(np.sqrt(np.mean((rows.predicted - rows.loss_q) ** 2)))
    parity.set(
        xlabel="predicted Loss_q (nats)",
        ylabel="measured Loss_q (nats)",
        title=f"Loss_q: RMSE {rmse:.3g} nats",
    )
    parity.legend(title="bits", fontsize=8)
    axes[len(widths)].legend(fontsize=7, loc="upper right")
    if fitted:
        p = fits["loss16"]["params"]
        law = (
            f"Eq. (3): Loss16 = ((Nc/N)^(aN/aD) + Dc/D)^aD, Nc={p['nc']['value']:.3g}, "
            f"Dc={p['dc']['value']:.3g}, aN={p['alpha_n']['value']:.3g}, "
            f"aD={p['alpha_d']['value']:.3g}; lines: Eq. (3) + Eq. (8)"
        )
    else:
        reason = fits.get("loss16", {}).get("skipped", "no Eq. (3) fit in the fits")
        law = f"Eq. (3) not fitted ({reason}): predicted Loss_q = measured Loss16 + Eq. (8) QiD"
    fig.suptitle(f"Fig. 7 - Loss_q = Loss16 + QiD ({fit_title(fits)})\n{law}", fontsize=10)
    return fig
