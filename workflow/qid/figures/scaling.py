"""Figs. 2-6 and 11: QiD against D, N and bits, with Eqs. (5)-(8) as fitted."""

from __future__ import annotations

import matplotlib.colors
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from qid.figures.style import bound, fit_title, model_palette, model_rows, plain_log_ticks
from qid.laws import LAWS, unified_from_fit, usable


def fig2_qid_vs_tokens(table: pd.DataFrame, fits: dict) -> plt.Figure:
    rows = model_rows(table, fits)
    palette = model_palette(rows)
    g = sns.relplot(
        data=rows,
        x="tokens",
        y="qid",
        hue="model",
        col="bits",
        kind="line",
        marker="o",
        palette=palette,
        facet_kws={"sharey": False},
        height=3.2,
        aspect=1.1,
    )
    g.set(xscale="log", xlabel="training tokens D", ylabel="QiD (nats)")
    for bits, ax in g.axes_dict.items():
        ax.axhline(0, color="gray", lw=0.8, ls=":")
        if "qid_se" in rows.columns:  # 95% intervals from the paired per-text standard error
            for model, part in rows[rows.bits == bits].groupby("model"):
                ax.errorbar(
                    part.tokens,
                    part.qid,
                    yerr=1.96 * part.qid_se,
                    fmt="none",
                    ecolor=palette[model],
                    elinewidth=0.8,
                    capsize=2,
                )
    plain_log_ticks(g)
    g.figure.suptitle(f"Fig. 2 - QiD vs training tokens ({fit_title(fits)}; bars: 95% CI)", y=1.03)
    return g.figure


def _law_figure(
    table: pd.DataFrame, fits: dict, law: str, x: str, hue: str, col: str, title: str
) -> plt.Figure:
    rows = model_rows(table, fits)
    rows = rows[usable(rows)]
    fit = fits[law]
    g = sns.relplot(
        data=rows,
        x=x,
        y="qid",
        hue=hue,
        col=col,
        height=3.2,
        aspect=1.1,
        palette="viridis" if hue == "tokens" else None,
    )
    g.set(xscale="log", yscale="log", ylabel="QiD (nats)")
    plain_log_ticks(g)
    if x == "bits":  # a few bit widths, no decade: label them all
        for ax in g.axes.flat:
            ax.set_xticks(sorted(rows.bits.unique()), labels=map(str, sorted(rows.bits.unique())))
    coef, exponents, group_cols = LAWS[law]
    name = next(iter(exponents))
    if "params" in fit:
        exponent, sign = fit["params"][name]["value"], exponents[name][1]
        xs = np.geomspace(rows[x].min(), rows[x].max(), 50)
        for c in fit["coefficients"]:
            ax = g.axes_dict.get(c.get(col)) if col in c else None
            for target in [ax] if ax is not None else g.axes.flat:
                target.plot(xs, c["value"] * xs ** (sign * exponent), color="k", lw=0.7, alpha=0.6)
        p = fit["params"][name]
        stat = (
            f"{name} = {p['value']:.3g} [{bound(p['ci_low'])}, {bound(p['ci_high'])}], "
            f"R2(log) = {fit['r2_log']:.2f}"
        )
    else:
        stat = f"not fitted: {fit.get('skipped')}"
    g.figure.suptitle(f"{title} ({fit_title(fits)}): {stat}", y=1.03)
    return g.figure


def fig3_tokens_law(table: pd.DataFrame, fits: dict) -> plt.Figure:
    return _law_figure(table, fits, "tokens", "tokens", "model", "bits", "Fig. 3 - Eq. (5)")


def fig4_size_law(table: pd.DataFrame, fits: dict) -> plt.Figure:
    return _law_figure(table, fits, "size", "n_params", "tokens", "bits", "Fig. 4 - Eq. (6)")


def fig5_bits_law(table: pd.DataFrame, fits: dict) -> plt.Figure:
    return _law_figure(table, fits, "bits", "bits", "tokens", "n_params", "Fig. 5 - Eq. (7)")


def fig6_unified_law(table: pd.DataFrame, fits: dict) -> plt.Figure:
    rows = model_rows(table, fits)
    rows = rows[usable(rows)]
    law = unified_from_fit(fits["unified"])
    models = rows.drop_duplicates("model")[["model", "n_params"]]
    palette = model_palette(rows)
    g = sns.relplot(
        data=rows,
        x="tokens",
        y="qid",
        hue="model",
        col="bits",
        height=3.2,
        aspect=1.1,
        palette=palette,
    )
    g.set(xscale="log", yscale="log", xlabel="training tokens D", ylabel="QiD (nats)")
    plain_log_ticks(g)
    xs = np.geomspace(rows.tokens.min(), rows.tokens.max(), 50)
    for bits, ax in g.axes_dict.items():
        for model, n in models.itertuples(index=False):
            ax.plot(xs, law.qid(n, xs, bits), color=palette[model], lw=1)
    u = fits["unified"]["params"]
    text = ", ".join(f"{k}={u[k]['value']:.3g}" for k in u)
    g.figure.suptitle(f"Fig. 6 - Eq. (8) unified fit ({fit_title(fits)}): {text}", y=1.03)
    return g.figure


def fig11_qid_surface(table: pd.DataFrame, fits: dict) -> plt.Figure:
    """The fitted Eq. (8) as a QiD map over model size N and training tokens D, one panel per
    bit width, the measured cells on top in the same colours (Fig. 11)."""
    rows = model_rows(table, fits)
    law = unified_from_fit(fits["unified"])
    widths = sorted(rows.bits.unique()) or fits["unified"]["range"]["bits"]
    ns = np.geomspace(rows.n_params.min() / 1.6, rows.n_params.max() * 1.6, 80)
    ds = np.geomspace(rows.tokens.min() / 1.6, rows.tokens.max() * 1.6, 80)
    grid_n, grid_d = np.meshgrid(ns, ds)
    surfaces = {b: law.qid(grid_n, grid_d, b) for b in widths}
    ok = rows[usable(rows)]
    values = np.concatenate([s.ravel() for s in surfaces.values()] + [ok.qid.to_numpy(float)])
    norm = matplotlib.colors.LogNorm(vmin=values.min(), vmax=values.max())
    levels = np.geomspace(norm.vmin, norm.vmax, 21)
    fig, axes = plt.subplots(
        1,
        len(widths),
        figsize=(3.5 * len(widths) + 0.8, 3.5),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    axes = axes[0]
    ticks = matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)).tick_values(norm.vmin, norm.vmax)
    ticks = [t for t in ticks if norm.vmin <= t <= norm.vmax]
    handles = {}
    for ax, b in zip(axes, widths, strict=True):
        filled = ax.contourf(grid_n, grid_d, surfaces[b], levels=levels, norm=norm, cmap="viridis")
        lines = ax.contour(grid_n, grid_d, surfaces[b], levels=ticks, colors="w", linewidths=0.5)
        ax.clabel(lines, fmt=lambda v: f"{v:.2g}", fontsize=7)
        cells = ok[ok.bits == b]
        handles["measured QiD (same colour scale)"] = ax.scatter(
            cells.n_params,
            cells.tokens,
            c=cells.qid,
            cmap="viridis",
            norm=norm,
            s=40,
            edgecolors="k",
            linewidths=0.8,
            zorder=3,
        )
        bad = rows[(rows.bits == b) & ~usable(rows)]
        if len(bad):
            handles["measured QiD <= 0 (off the scale)"] = ax.scatter(
                bad.n_params, bad.tokens, marker="x", color="r", s=30, zorder=3
            )
        ax.set(xscale="log", yscale="log", xlabel="non-embedding parameters N", title=f"{b:g}-bit")
    axes[0].set_ylabel("training tokens D")
    bar = fig.colorbar(filled, ax=axes, label="QiD (nats)")
    bar.set_ticks(ticks)
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
    bar.ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=2, fontsize=8)
    p = fits["unified"]["params"]
    fig.suptitle(
        f"Fig. 11 - Eq. (8) over N and D ({fit_title(fits)}): k={p['k']['value']:.3g}, "
        + ", ".join(f"{k}={p[k]['value']:.3g}" for k in ("alpha", "beta", "gamma") if k in p)
        + " (contours)",
        fontsize=10,
    )
    return fig
