"""Fig. 1: the predicted loss of quantized 7B/70B/405B models far beyond the data."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from qid.figures.style import bits_palette, decade_ticks
from qid.laws import (
    PUBLISHED,
    PUBLISHED_LOSS16,
    PUBLISHED_RANGE,
    Loss16Law,
    loss16_from_fit,
    unified_from_fit,
)
from qid.laws.compare import comparable_laws
from qid.laws.forms import qid as form_qid
from qid.laws.paper import FIG1_BITS, FIG1_MODELS, FIG1_TOKENS, LLAMA3_VOCAB


def uniform_loss(vocab_size: int = LLAMA3_VOCAB) -> float:
    """Cross-entropy (nats) of guessing uniformly over the vocabulary: ln(V)."""
    return float(np.log(vocab_size))


def projection_laws(fits: dict, source: str = "published") -> tuple[dict, Loss16Law, str]:
    """Fig. 1's laws: {bits: QiD law} and the 16-bit loss law. "published": the paper's Eq. (8)
    and Eq. (3) fits on Pythia. "fits": the fits file's per-bit-width laws (the unified one
    where a width has none) and its Eq. (3) fit - meaningful only for Pythia-scale data."""
    if source == "published":
        return {}, PUBLISHED_LOSS16, "published Pythia laws (Ouyang et al. 2024)"
    if source != "fits":
        raise ValueError(f"unknown law source {source!r} (published or fits)")
    by_bits = {
        float(b): unified_from_fit(f) for b, f in fits.get("by_bits", {}).items() if "params" in f
    }
    if "params" not in fits.get("loss16", {}):
        raise ValueError("the fits have no Eq. (3) fit of the 16-bit loss (fits['loss16'])")
    return by_bits, loss16_from_fit(fits["loss16"]), "this study's fits"


def fig1_projection(
    table: pd.DataFrame,
    fits: dict,
    vocab_size: int = LLAMA3_VOCAB,
    source: str = "published",
    models: dict[str, float] | None = None,
    bits: tuple[int, ...] = FIG1_BITS,
    tokens: tuple[float, float] = FIG1_TOKENS,
) -> plt.Figure:
    """Predicted loss of quantized 7B/70B/405B models up to 1e14 training tokens:
    Loss_q = Loss_16 (Eq. 3) + QiD (Eq. 8); gray where it is worse than uniform guessing.
    With source "fits" and at least two comparable rival forms (fits["compare"]), a band per
    bit width spans their predictions: extrapolation is where the forms disagree."""
    by_bits, loss_law, label = projection_laws(fits, source)
    unified = PUBLISHED if source == "published" else unified_from_fit(fits["unified"])
    models = models or FIG1_MODELS
    ceiling = uniform_loss(vocab_size)
    xs = np.geomspace(*tokens, 200)
    colors = bits_palette(bits)
    fig, axes = plt.subplots(
        1, len(models), figsize=(3.4 * len(models), 3.4), sharey=True, layout="constrained"
    )
    axes = np.atleast_1d(axes)
    curves = {}
    forms = comparable_laws(fits.get("compare")) if source == "fits" else {}
    for ax, (name, n) in zip(axes, models.items(), strict=True):
        loss16 = loss_law.loss(n, xs)
        ax.plot(xs, loss16, color="k", ls="--", lw=1, label="16-bit")
        for b in bits:
            law = by_bits.get(float(b), unified)
            curves[name, b] = loss16 + law.qid(n, xs, b)
            ax.plot(xs, curves[name, b], color=colors[b], lw=1.6, label=f"{b}-bit")
            if len(forms) >= 2:  # the lr form for a fully decayed run (lr = 0)
                each = [loss16 + form_qid(f, v, n, xs, b) for f, v in forms.values()]
                band = f"{b}-bit, comparable forms ({', '.join(forms)})"
                ax.fill_between(
                    xs, np.min(each, 0), np.max(each, 0), color=colors[b], alpha=0.2, lw=0
                ).set(label=band, gid="forms-spread")
        ax.set(xscale="log", yscale="log", title=f"{name} parameters")
        ax.set_xlabel("training tokens D")
        if source == "published":  # where the laws' data ends: beyond it they extrapolate
            ax.axvline(PUBLISHED_RANGE["tokens"][1], color="0.5", lw=0.8, ls=":")
    top = max(ceiling * 1.5, max(float(np.max(c)) for c in curves.values()) * 1.2)
    bottom = min(float(np.min(loss_law.loss(n, xs))) for n in models.values()) * 0.9
    for ax in axes:
        ax.axhspan(ceiling, top, color="0.85", zorder=0, gid="worse-than-uniform")
        ax.axhline(ceiling, color="0.4", lw=0.8)
        ax.set_ylim(bottom, top)
        decade_ticks(ax)
        ticks = [t for t in (2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100) if bottom <= t <= top]
        ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].set_ylabel("predicted loss (nats)")
    axes[0].text(
        tokens[0] * 1.5,
        ceiling * 1.05,
        f"worse than uniform guessing: > ln({vocab_size:,}) = {ceiling:.2f}",
        fontsize=8,
        va="bottom",
    )
    if source == "published":
        axes[0].text(
            PUBLISHED_RANGE["tokens"][1] * 1.3, bottom * 1.05, "Pythia data ends", fontsize=7
        )
    axes[-1].legend(loc="upper left", fontsize=8, frameon=True)
    fig.suptitle(f"Fig. 1 - predicted loss of quantized models, Loss16 + QiD ({label})")
    return fig
