"""The paper's figures, drawn from the QiD table and the fits alone (no grid rerun needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from qid.laws import LAWS, unified_from_fit, usable  # noqa: E402

Figure = Callable[[pd.DataFrame, dict], plt.Figure]


def _rows(table: pd.DataFrame, fits: dict) -> pd.DataFrame:
    meta = fits.get("meta", {})
    for column in ("method", "eval_set"):
        if meta.get(column) is not None:
            table = table[table[column] == meta[column]]
    table = table.sort_values(["n_params", "tokens"])
    # Sizes ordered by N, labelled with N, for legends that read like the paper's.
    order = table.drop_duplicates("size")[["size", "n_params"]]
    labels = {
        s: f"{s} (N={n / 1e6:.2g}M)" for s, n in zip(order["size"], order["n_params"], strict=True)
    }
    return table.assign(model=table["size"].map(labels))


def _palette(rows: pd.DataFrame) -> dict:
    models = rows.drop_duplicates("model").model
    return dict(zip(models, sns.color_palette(n_colors=len(models)), strict=True))


def _plain_log_ticks(g: sns.FacetGrid) -> None:
    """Label only the decades of log axes: minor-tick labels overlap on short ranges."""
    for ax in g.axes.flat:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _title(fits: dict) -> str:
    meta = fits.get("meta", {})
    return f"{meta.get('method') or 'all methods'} on {meta.get('eval_set') or 'all eval sets'}"


def fig2_qid_vs_tokens(table: pd.DataFrame, fits: dict) -> plt.Figure:
    rows = _rows(table, fits)
    palette = _palette(rows)
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
    _plain_log_ticks(g)
    g.figure.suptitle(f"Fig. 2 - QiD vs training tokens ({_title(fits)}; bars: 95% CI)", y=1.03)
    return g.figure


def _law_figure(
    table: pd.DataFrame, fits: dict, law: str, x: str, hue: str, col: str, title: str
) -> plt.Figure:
    rows = _rows(table, fits)
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
    _plain_log_ticks(g)
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
            f"{name} = {p['value']:.3g} [{p['ci_low']:.3g}, {p['ci_high']:.3g}], "
            f"R2(log) = {fit['r2_log']:.2f}"
        )
    else:
        stat = f"not fitted: {fit.get('skipped')}"
    g.figure.suptitle(f"{title} ({_title(fits)}): {stat}", y=1.03)
    return g.figure


def fig3_tokens_law(table: pd.DataFrame, fits: dict) -> plt.Figure:
    return _law_figure(table, fits, "tokens", "tokens", "model", "bits", "Fig. 3 - Eq. (5)")


def fig4_size_law(table: pd.DataFrame, fits: dict) -> plt.Figure:
    return _law_figure(table, fits, "size", "n_params", "tokens", "bits", "Fig. 4 - Eq. (6)")


def fig5_bits_law(table: pd.DataFrame, fits: dict) -> plt.Figure:
    return _law_figure(table, fits, "bits", "bits", "tokens", "n_params", "Fig. 5 - Eq. (7)")


def fig6_unified_law(table: pd.DataFrame, fits: dict) -> plt.Figure:
    rows = _rows(table, fits)
    rows = rows[usable(rows)]
    law = unified_from_fit(fits["unified"])
    models = rows.drop_duplicates("model")[["model", "n_params"]]
    palette = _palette(rows)
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
    _plain_log_ticks(g)
    xs = np.geomspace(rows.tokens.min(), rows.tokens.max(), 50)
    for bits, ax in g.axes_dict.items():
        for model, n in models.itertuples(index=False):
            ax.plot(xs, law.qid(n, xs, bits), color=palette[model], lw=1)
    u = fits["unified"]["params"]
    text = ", ".join(f"{k}={u[k]['value']:.3g}" for k in u)
    g.figure.suptitle(f"Fig. 6 - Eq. (8) unified fit ({_title(fits)}): {text}", y=1.03)
    return g.figure


FIGURES: dict[str, Figure] = {
    f.__name__: f
    for f in [fig2_qid_vs_tokens, fig3_tokens_law, fig4_size_law, fig5_bits_law, fig6_unified_law]
}


def make_all(table: Path, fits: Path, out_dir: Path, names: list[str] | None = None) -> list:
    frame = pd.read_parquet(table)
    fit = json.loads(Path(fits).read_text())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or FIGURES:
        fig = FIGURES[name](frame, fit)
        for ext in ("png", "pdf"):
            fig.savefig(out_dir / f"{name}.{ext}", bbox_inches="tight", dpi=150)
            written.append(out_dir / f"{name}.{ext}")
        plt.close(fig)
    return written
