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

from qid.data import read_table  # noqa: E402
from qid.laws import (  # noqa: E402
    LAWS,
    PUBLISHED,
    PUBLISHED_LOSS16,
    PUBLISHED_RANGE,
    Loss16Law,
    fit_law,
    loss16_from_fit,
    unified_from_fit,
    usable,
)

Figure = Callable[[pd.DataFrame, dict], plt.Figure]


def _count(n: float) -> str:
    """A parameter count as the paper writes it: 0.79M, 160M, 2.8B."""
    value, unit = (n / 1e9, "B") if n >= 1e9 else (n / 1e6, "M")
    return f"{value:.3g}{unit}" if value >= 100 else f"{value:.2g}{unit}"


def _rows(table: pd.DataFrame, fits: dict) -> pd.DataFrame:
    meta = fits.get("meta", {})
    for column in ("method", "eval_set"):
        if meta.get(column) is not None:
            table = table[table[column] == meta[column]]
    table = table.sort_values(["n_params", "tokens"])
    # Sizes ordered by N, labelled with N, for legends that read like the paper's; with several
    # suites the label names the suite too (two suites may share a size name).
    suites = "suite" in table.columns and table["suite"].nunique() > 1
    keys = ["suite", "size"] if suites else ["size"]
    order = table.drop_duplicates(keys)
    labels = {
        tuple(row[k] for k in keys): " ".join(map(str, (row[k] for k in keys)))
        + f" (N={_count(row['n_params'])})"
        for _, row in order.iterrows()
    }
    model = [labels[key] for key in zip(*(table[k] for k in keys), strict=True)]
    return table.assign(model=model)


def _palette(rows: pd.DataFrame) -> dict:
    models = rows.drop_duplicates("model").model
    return dict(zip(models, sns.color_palette(n_colors=len(models)), strict=True))


def _plain_log_ticks(g: sns.FacetGrid) -> None:
    """Label only the decades of log axes: minor-tick labels overlap on short ranges."""
    for ax in g.axes.flat:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _g(x: float | None) -> str:
    """An interval bound: null in fits.json where lmfit could not estimate it."""
    return "n/a" if x is None else f"{x:.3g}"


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
            f"{name} = {p['value']:.3g} [{_g(p['ci_low'])}, {_g(p['ci_high'])}], "
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


# ---------------------------------------------------------------------------------------------
# Figs. 1, 7-11. Where the table lacks what a figure needs, the figure is a placeholder that
# says what it needs and what the table holds, so that every rule and the report still work.

LLAMA3_VOCAB = 128_256  # Llama-3's vocabulary, the paper's reference tokenizer (Appendix A.1)
# Fig. 1's models: nominal parameter counts, as the paper labels them.
PROJECTED_MODELS = {"7B": 7e9, "70B": 70e9, "405B": 405e9}


def _source(table: pd.DataFrame) -> str:
    """The table's file name where make_all recorded it, for placeholder messages."""
    return table.attrs.get("source", "the QiD table")


def _listing(values) -> str:
    values = sorted(map(str, values))
    return f"{len(values)} ({', '.join(values)})" if values else "none"


def placeholder(title: str, message: str) -> plt.Figure:
    """A small figure that says why the real one cannot be drawn from this data."""
    import textwrap

    fig, ax = plt.subplots(figsize=(7, 1.9))
    ax.axis("off")
    text = "\n".join(textwrap.wrap(message, 80, break_on_hyphens=False))
    ax.text(0.5, 0.62, title, ha="center", va="bottom", fontsize=12, weight="bold")
    ax.text(0.5, 0.55, text, ha="center", va="top", fontsize=10, color="0.25")
    return fig


def _fit_options(fits: dict) -> dict:
    meta = fits.get("meta", {})
    return {"weighted": meta.get("weighted", True), "loss": meta.get("loss", "linear")}


def _sci_label(value: float, _pos=None) -> str:
    """2e5 as 2x10^5 (math text), 1e6 as 10^6."""
    if value <= 0:
        return ""
    exponent = int(np.floor(np.log10(value) + 1e-9))
    mantissa = round(value / 10.0**exponent, 6)
    if mantissa == 1:
        return f"$10^{{{exponent}}}$"
    return f"${mantissa:g}\\times10^{{{exponent}}}$"


def _decade_ticks(ax: plt.Axes, axis: str = "x") -> None:
    """Readable ticks on a log axis: decades only, or 1-2-5 steps where the data spans less
    than about a decade and a half (where decades alone would leave one tick or none)."""
    target = getattr(ax, f"{axis}axis")
    lo, hi = sorted(getattr(ax, f"get_{axis}lim")())
    if lo > 0 and hi / lo < 30:
        target.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(matplotlib.ticker.FuncFormatter(_sci_label))
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _bits_palette(widths) -> dict:
    """Discrete colours per bit width, dark (fewest bits) to light, none too pale to see."""
    widths = sorted(widths)
    return dict(zip(widths, sns.color_palette("rocket", n_colors=len(widths) + 1), strict=False))


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
    bits: tuple[int, ...] = (2, 3, 4),
    tokens: tuple[float, float] = (1e9, 1e14),
) -> plt.Figure:
    """Predicted loss of quantized 7B/70B/405B models up to 1e14 training tokens:
    Loss_q = Loss_16 (Eq. 3) + QiD (Eq. 8); gray where it is worse than uniform guessing."""
    by_bits, loss_law, label = projection_laws(fits, source)
    unified = PUBLISHED if source == "published" else unified_from_fit(fits["unified"])
    models = models or PROJECTED_MODELS
    ceiling = uniform_loss(vocab_size)
    xs = np.geomspace(*tokens, 200)
    colors = _bits_palette(bits)
    fig, axes = plt.subplots(
        1, len(models), figsize=(3.4 * len(models), 3.4), sharey=True, layout="constrained"
    )
    axes = np.atleast_1d(axes)
    curves = {}
    for ax, (name, n) in zip(axes, models.items(), strict=True):
        loss16 = loss_law.loss(n, xs)
        ax.plot(xs, loss16, color="k", ls="--", lw=1, label="16-bit")
        for b in bits:
            law = by_bits.get(float(b), unified)
            curves[name, b] = loss16 + law.qid(n, xs, b)
            ax.plot(xs, curves[name, b], color=colors[b], lw=1.6, label=f"{b}-bit")
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
        _decade_ticks(ax)
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


def fig7_loss_prediction(table: pd.DataFrame, fits: dict) -> plt.Figure:
    """Eq. (3) on the 16-bit losses, and Loss_q = Loss_16 + QiD against the measured Loss_q."""
    if "loss_16" not in table.columns or "loss_q" not in table.columns:
        return placeholder(
            "Fig. 7 - loss prediction",
            f"Fig. 7 needs the columns loss_16 and loss_q; {_source(table)} has "
            f"{', '.join(table.columns)}",
        )
    rows = _rows(table, fits)
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
    palette = _palette(rows)
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
        _decade_ticks(ax)
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
        palette=_bits_palette(widths),
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
    fig.suptitle(f"Fig. 7 - Loss_q = Loss16 + QiD ({_title(fits)})\n{law}", fontsize=10)
    return fig


def eval_set_pairs(table: pd.DataFrame, fits: dict) -> tuple[pd.DataFrame, str, list[str]]:
    """QiD of the same cells on the fit's eval set (A) and on each other eval set: rows with
    qid_A, qid_B (and their standard errors) per other eval set B; (frame, A, [B...])."""
    method = fits.get("meta", {}).get("method")
    rows = table if method is None else table[table["method"] == method]
    sets = sorted(rows["eval_set"].unique())
    first = fits.get("meta", {}).get("eval_set") or (sets[0] if sets else None)
    others = [s for s in sets if s != first]
    keys = [c for c in ("suite", "size", "step", "method", "bits") if c in rows.columns]
    base = _rows(rows, {})
    a = base[base.eval_set == first]
    frames = []
    for other in others:
        b = base[base.eval_set == other][keys + ["qid"] + (["qid_se"] if "qid_se" in base else [])]
        frames.append(a.merge(b, on=keys, suffixes=("_a", "_b")).assign(other=other))
    pairs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return pairs, first, others


def fig8_eval_sets(table: pd.DataFrame, fits: dict) -> plt.Figure:
    """QiD on the fit's eval set against QiD on another eval set, same cells (Fig. 8)."""
    method = fits.get("meta", {}).get("method")
    rows = table if method is None else table[table["method"] == method]
    sets = rows["eval_set"].unique()
    if len(sets) < 2:
        return placeholder(
            "Fig. 8 - QiD on two eval sets",
            f"Fig. 8 needs QiD on at least 2 eval sets{f' for {method}' if method else ''}; "
            f"{_source(table)} holds {_listing(sets)}",
        )
    pairs, first, others = eval_set_pairs(table, fits)
    palette = _palette(pairs)
    widths = sorted(pairs.bits.unique())
    fig, axes = plt.subplots(
        len(others),
        len(widths),
        figsize=(3.3 * len(widths), 3.2 * len(others)),
        squeeze=False,
        layout="constrained",
    )
    for i, other in enumerate(others):
        for j, b in enumerate(widths):
            ax = axes[i, j]
            part = pairs[(pairs.other == other) & (pairs.bits == b)]
            if "qid_se_a" in part:
                for model, cells in part.groupby("model", sort=False):
                    ax.errorbar(
                        cells.qid_a,
                        cells.qid_b,
                        xerr=1.96 * cells.qid_se_a,
                        yerr=1.96 * cells.qid_se_b,
                        fmt="none",
                        ecolor=palette[model],
                        elinewidth=0.6,
                        alpha=0.6,
                    )
            sns.scatterplot(
                data=part,
                x="qid_a",
                y="qid_b",
                hue="model",
                palette=palette,
                ax=ax,
                s=22,
                legend="auto" if (i, j) == (0, len(widths) - 1) else False,
            )
            lo = min(part.qid_a.min(), part.qid_b.min(), 0)
            hi = max(part.qid_a.max(), part.qid_b.max())
            pad = 0.05 * (hi - lo or 1)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="gray", lw=0.8, ls=":")
            r = part.qid_a.corr(part.qid_b) if len(part) > 2 else float("nan")
            ax.set(
                xlabel=f"QiD on {first} (nats)",
                ylabel=f"QiD on {other} (nats)",
                title=f"{b:g}-bit: r = {r:.2f}, n = {len(part)}",
            )
            for axis in (ax.xaxis, ax.yaxis):  # no offset text: it collides with the labels
                axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    legend = axes[0, -1].get_legend()
    if legend is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.suptitle(
        f"Fig. 8 - QiD of the same cells on two eval sets ({method or 'all methods'}; "
        "bars: 95% CI; dotted: identity)"
    )
    return fig


def method_widths(table: pd.DataFrame, fits: dict) -> dict[float, list[str]]:
    """{bit width: methods} on the fit's eval set, for bit widths with at least 2 methods."""
    eval_set = fits.get("meta", {}).get("eval_set")
    rows = table if eval_set is None else table[table["eval_set"] == eval_set]
    by = rows.groupby("bits")["method"].unique()
    return {float(b): sorted(m) for b, m in by.items() if len(m) >= 2}


def fig9_methods(table: pd.DataFrame, fits: dict) -> plt.Figure:
    """QiD of the methods at a common bit width against training tokens, one panel per model
    size, with Eq. (8) fitted per method at that width (gamma drops out), as in Fig. 9."""
    widths = method_widths(table, fits)
    if not widths:
        eval_set = fits.get("meta", {}).get("eval_set")
        rows = table if eval_set is None else table[table["eval_set"] == eval_set]
        held = "; ".join(
            f"{b:g} bits: {', '.join(sorted(m))}"
            for b, m in rows.groupby("bits")["method"].unique().items()
        )
        return placeholder(
            "Fig. 9 - quantization methods compared",
            "Fig. 9 needs at least 2 methods at one bit width (the paper: GPTQ, AWQ and "
            f"bitsandbytes at 4 bits); {_source(table)} holds {held or 'no rows'}",
        )
    eval_set = fits.get("meta", {}).get("eval_set")
    rows = _rows(table, {"meta": {"eval_set": eval_set}})
    rows = rows[rows.bits.isin(list(widths))]
    methods = sorted({m for ms in widths.values() for m in ms})
    colors = dict(zip(methods, sns.color_palette("Set1", n_colors=len(methods)), strict=True))
    models = list(dict.fromkeys(rows.model))
    fig = plt.figure(figsize=(3.1 * len(models), 3.1 * len(widths)), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(widths), 1))
    options = _fit_options(fits)
    for sub, (b, ms) in zip(subfigs, widths.items(), strict=True):
        axes = np.atleast_1d(sub.subplots(1, len(models), sharey=True))
        laws = {}
        for m in ms:
            fit = fit_law(rows[(rows.bits == b) & (rows.method == m)], "unified", **options)
            if "params" in fit:
                laws[m] = (unified_from_fit(fit), fit["params"])
        for ax, model in zip(axes, models, strict=True):
            part = rows[(rows.bits == b) & (rows.model == model)]
            for m in ms:
                cells = part[part.method == m]
                if cells.empty:
                    continue
                yerr = 1.96 * cells.qid_se if "qid_se" in cells else None
                ax.errorbar(
                    cells.tokens,
                    cells.qid,
                    yerr=yerr,
                    fmt="o",
                    ms=3.5,
                    color=colors[m],
                    elinewidth=0.7,
                    capsize=2,
                    label=m,
                )
                if m in laws:
                    xs = np.geomspace(cells.tokens.min(), cells.tokens.max(), 50)
                    ax.plot(
                        xs,
                        laws[m][0].qid(cells.n_params.iloc[0], xs),
                        color=colors[m],
                        lw=1,
                        ls="--",
                    )
            ax.axhline(0, color="gray", lw=0.8, ls=":")
            ax.set(xscale="log", title=model, xlabel="training tokens D")
            ax.title.set_fontsize(9)
            _decade_ticks(ax)
        axes[0].set_ylabel("QiD (nats)")
        axes[-1].legend(fontsize=8)
        fitted = "; ".join(
            f"{m}: " + ", ".join(f"{k}={p[k]['value']:.2g}" for k in ("beta", "alpha") if k in p)
            for m, (_, p) in laws.items()
        )
        sub.suptitle(
            f"{b:g}-bit" + (f" - Eq. (8) per method: {fitted}" if fitted else ""), fontsize=10
        )
    fig.suptitle(
        f"Fig. 9 - QiD of quantization methods at a common bit width "
        f"({eval_set or 'all eval sets'}; bars: 95% CI; dashed: Eq. (8) fitted per method)",
        fontsize=11,
    )
    return fig


def suite_transfer(table: pd.DataFrame, fits: dict) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Leave one suite out: Eq. (8) fitted on the fit's method and eval set in every other suite
    predicts the held-out suite's QiD. Returns the held-out rows with `predicted` and `held_out`
    columns, and {held-out suite: the fit that predicted it}."""
    rows = _rows(table, fits)
    frames, used = [], {}
    for suite in sorted(rows["suite"].unique()):
        fit = fit_law(rows[rows.suite != suite], "unified", **_fit_options(fits))
        used[suite] = fit
        if "params" not in fit:
            continue
        test = rows[rows.suite == suite]
        law = unified_from_fit(fit)
        predicted = law.qid(*(test[c].to_numpy(float) for c in ("n_params", "tokens", "bits")))
        frames.append(test.assign(predicted=predicted, held_out=suite))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return out, used


def fig10_suite_transfer(table: pd.DataFrame, fits: dict) -> plt.Figure:
    """Actual QiD of each suite against Eq. (8) fitted without it (Fig. 10, right)."""
    suites = table["suite"].unique() if "suite" in table.columns else []
    if len(suites) < 2:
        return placeholder(
            "Fig. 10 - transfer of the law to another suite",
            f"Fig. 10 needs at least 2 suites; {_source(table)} holds {_listing(suites)}",
        )
    pred, used = suite_transfer(table, fits)
    if pred.empty:
        reasons = "; ".join(f"without {s}: {f.get('skipped')}" for s, f in used.items())
        return placeholder(
            "Fig. 10 - transfer of the law to another suite",
            f"Fig. 10 could not fit Eq. (8) on any set of suites but one ({reasons})",
        )
    ok = pred[usable(pred)]
    fig, ax = plt.subplots(figsize=(5.6, 4.6), layout="constrained")
    sns.scatterplot(data=ok, x="predicted", y="qid", hue="held_out", style="bits", ax=ax, s=30)
    lo = min(ok.predicted.min(), ok.qid.min()) / 1.5
    hi = max(ok.predicted.max(), ok.qid.max()) * 1.5
    ax.plot([lo, hi], [lo, hi], color="gray", lw=0.8, ls=":")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(lo, hi),
        ylim=(lo, hi),
        xlabel="predicted QiD (nats), law fitted without the suite",
        ylabel="actual QiD (nats)",
    )
    lines = []
    for suite, part in ok.groupby("held_out"):
        err = np.log(part.predicted) - np.log(part.qid)
        p = used[suite]["params"]
        lines.append(
            f"{suite}: RMSE(log) {np.sqrt(np.mean(err**2)):.2f}, "
            f"beta={p['beta']['value']:.2g} alpha={p.get('alpha', {'value': 0})['value']:.2g}"
        )
    dropped = len(pred) - len(ok)
    if dropped:
        lines.append(f"{dropped} cells with QiD <= 0 not shown")
    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, va="top", fontsize=7.5)
    sns.move_legend(ax, "lower right", fontsize=8)
    fig.suptitle(
        f"Fig. 10 - actual vs predicted QiD, each suite held out ({_title(fits)})", fontsize=10
    )
    return fig


def fig11_qid_surface(table: pd.DataFrame, fits: dict) -> plt.Figure:
    """The fitted Eq. (8) as a QiD map over model size N and training tokens D, one panel per
    bit width, the measured cells on top in the same colours (Fig. 11)."""
    rows = _rows(table, fits)
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
        f"Fig. 11 - Eq. (8) over N and D ({_title(fits)}): k={p['k']['value']:.3g}, "
        + ", ".join(f"{k}={p[k]['value']:.3g}" for k in ("alpha", "beta", "gamma") if k in p)
        + " (contours)",
        fontsize=10,
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Figs. 12 and 14 (training dynamics) are drawn from other tables than the QiD table: the weight
# changes of `qid weights` and the training logs of `qid train`, given as `qid figures --data`.


def _model_labels(frame: pd.DataFrame) -> pd.Series:
    """'size (N=0.79M)', with the suite in front where there are several."""
    suites = "suite" in frame.columns and frame["suite"].nunique() > 1
    prefix = frame["suite"].astype(str) + " " if suites else ""
    return prefix + frame["size"].astype(str) + frame["n_params"].map(lambda n: f" (N={_count(n)})")


def fig12_weight_change(
    table: pd.DataFrame,
    fits: dict,
    weight_changes: pd.DataFrame | None = None,
    weight_samples: pd.DataFrame | None = None,
) -> plt.Figure:
    """Weight change between consecutive checkpoints per layer type, per training step (the
    checkpoints are log-spaced; Pythia's, in the paper, are evenly spaced), and a sample of
    individual weights of the largest model across checkpoints (Fig. 12)."""
    if weight_changes is None or weight_changes.empty:
        return placeholder(
            "Fig. 12 - weight change between checkpoints",
            "Fig. 12 needs the weight changes between consecutive checkpoints (qid weights, "
            "results/<suite>/weights/changes.parquet) of a suite with at least 2 checkpoints; "
            "none were given",
        )
    moves = weight_changes.sort_values(["n_params", "step"])
    moves = moves.assign(
        model=_model_labels(moves),
        per_step=moves.mean_abs_change / moves.steps_between,
        rel_per_step=moves.rel_change / moves.steps_between,
    )
    kinds = list(dict.fromkeys(weight_changes.layer_type))  # qid.weights' order
    samples = weight_samples if weight_samples is not None else pd.DataFrame()
    rows = 3 if not samples.empty else 2
    fig, axes = plt.subplots(
        rows,
        len(kinds),
        figsize=(3.2 * len(kinds), 2.8 * rows),
        squeeze=False,
        layout="constrained",
    )
    palette = dict(
        zip(
            moves.model.unique(),
            sns.color_palette(n_colors=moves.model.nunique()),
            strict=True,
        )
    )
    for j, kind in enumerate(kinds):
        part = moves[moves.layer_type == kind]
        for row, (column, label) in enumerate(
            [("per_step", "mean |dW| per step"), ("rel_per_step", "||dW|| / ||W|| per step")]
        ):
            ax = axes[row, j]
            for model, cells in part.groupby("model", sort=False):
                ax.plot(
                    cells.tokens, cells[column], "o-", ms=3.5, color=palette[model], label=model
                )
            ax.set(xscale="log", yscale="log", title=kind if row == 0 else None)
            ax.set_xlabel("training tokens D" if rows == 2 and row == 1 else None)
            _decade_ticks(ax)
            if j == 0:
                ax.set_ylabel(label)
    axes[0, -1].legend(fontsize=7, loc="best")
    if not samples.empty:
        largest = samples[samples.n_params == samples.n_params.max()]
        largest = largest[largest.suite == largest.suite.iloc[0]]
        for j, kind in enumerate(kinds):
            ax = axes[2, j]
            for _, cells in largest[largest.layer_type == kind].groupby("weight"):
                cells = cells.sort_values("step")
                ax.plot(cells.tokens, cells.value, "o-", ms=2.5, lw=1)
            ax.set(xscale="log", xlabel="training tokens D")
            _decade_ticks(ax)
        name = _model_labels(largest.iloc[:1]).iloc[0]
        axes[2, 0].set_ylabel(f"sampled weights\n{name}")
    fig.suptitle(
        "Fig. 12 - weight change between consecutive checkpoints, per training step, "
        "by layer type (rows 1-2); sampled weights across checkpoints (row 3)",
        fontsize=10,
    )
    return fig


def _smooth(values: pd.Series, window: int) -> pd.Series:
    return values.rolling(window, min_periods=1, center=True).mean()


def bitnet_pairs(train: pd.DataFrame) -> pd.DataFrame:
    """The training-log rows of the sizes trained both as BitNet and 16-bit (same suite)."""
    train = (
        train.assign(bitnet=train["bitnet"].fillna(False).astype(bool))
        if ("bitnet" in train.columns)
        else train.assign(bitnet=False)
    )
    both = train.groupby(["suite", "size"]).bitnet.nunique()
    pairs = both[both == 2].index
    keep = pd.MultiIndex.from_frame(train[["suite", "size"]]).isin(pairs)
    return train[keep]


def fig14_bitnet(table: pd.DataFrame, fits: dict, train: pd.DataFrame | None = None) -> plt.Figure:
    """Training loss of BitNet b1.58 against its 16-bit twin (same data, seed, init, tokens),
    early steps and late steps, and the gap BitNet - 16-bit over all steps (Fig. 14)."""
    pairs = bitnet_pairs(train) if train is not None and not train.empty else pd.DataFrame()
    if pairs.empty:
        held = (
            "none"
            if train is None or train.empty
            else _listing(
                f"{s}/{z}{' BitNet' * bool(b)}"
                for (s, z, b) in train.assign(bitnet=train.get("bitnet", False))[
                    ["suite", "size", "bitnet"]
                ]
                .drop_duplicates()
                .itertuples(index=False)
            )
        )
        return placeholder(
            "Fig. 14 - BitNet b1.58 vs 16-bit training",
            "Fig. 14 needs the training logs of a BitNet b1.58 model and its 16-bit twin "
            f"(a bitnet: block in the config); the logs given: {held}",
        )
    pairs = pairs.sort_values(["n_params", "suite", "size", "bitnet", "step"])
    models = pairs.drop_duplicates(["suite", "size"])
    colors = {False: "0.15", True: sns.color_palette("Set1")[0]}
    names = {False: "16-bit", True: "BitNet b1.58"}
    fig, axes = plt.subplots(
        len(models), 3, figsize=(11, 2.9 * len(models)), squeeze=False, layout="constrained"
    )
    for i, (_, model) in enumerate(models.iterrows()):
        run = pairs[(pairs.suite == model.suite) & (pairs["size"] == model["size"])]
        total = int(run.step.max())
        window = max(1, total // 25)
        curves = {
            b: part.assign(smooth=_smooth(part.loss, window)) for b, part in run.groupby("bitnet")
        }
        early, late = total // 4, total // 2  # the first quarter; the second half
        for ax, (lo, hi, span) in zip(
            axes[i, :2], [(1, early, "early steps"), (late, total, "late steps")], strict=True
        ):
            for b, part in curves.items():
                seen = part[(part.step >= lo) & (part.step <= hi)]
                ax.plot(seen.step, seen.loss, color=colors[b], lw=0.6, alpha=0.3)
                lr = part.lr.max()
                ax.plot(
                    seen.step,
                    seen.smooth,
                    color=colors[b],
                    lw=1.6,
                    label=f"{names[b]} (peak lr {lr:.2g})",
                )
            ax.set(title=f"{span} ({lo}-{hi})", xlabel="training step")
        axes[i, 0].set_ylabel(f"{_model_labels(run.iloc[:1]).iloc[0]}\ntraining loss (nats)")
        axes[i, 0].legend(fontsize=8)
        gap = curves[True].set_index("step").smooth - curves[False].set_index("step").smooth
        ax = axes[i, 2]
        ax.plot(gap.index, gap, color=colors[True], lw=1.4)
        ax.axhline(0, color="gray", lw=0.8, ls=":")
        for lo, hi in ((1, early), (late, total)):
            ax.axvspan(lo, hi, color="0.92", zorder=0)
        ax.set(
            title=f"BitNet - 16-bit (running mean, {window} steps)",
            xlabel="training step",
            ylabel="loss gap (nats)",
        )
    per_step = pairs.tokens.iloc[0] // pairs.step.iloc[0]
    fig.suptitle(
        "Fig. 14 - training loss of BitNet b1.58 and its 16-bit twin (same data, seed, init "
        f"and {per_step:,} tokens per step; thin: per step, thick: running mean)",
        fontsize=10,
    )
    return fig


# Figures drawn from other tables than the QiD table: figure -> its `qid figures --data` keys.
DATA: dict[str, tuple[str, ...]] = {
    "fig12_weight_change": ("weight_changes", "weight_samples"),
    "fig14_bitnet": ("train",),
}


FIGURES: dict[str, Figure] = {
    f.__name__: f
    for f in [
        fig1_projection,
        fig2_qid_vs_tokens,
        fig3_tokens_law,
        fig4_size_law,
        fig5_bits_law,
        fig6_unified_law,
        fig7_loss_prediction,
        fig8_eval_sets,
        fig9_methods,
        fig10_suite_transfer,
        fig11_qid_surface,
        fig12_weight_change,
        fig14_bitnet,
    ]
}


def make_all(
    table: Path | None,
    fits: Path | None,
    out_dir: Path,
    names: list[str] | None = None,
    data: dict[str, list[Path]] | None = None,
) -> list:
    """Draw `names` (default: all figures). The QiD table and the fits are read only when a
    figure needs them; `data` gives the other tables by key (DATA), several files concatenated."""
    names = names or list(FIGURES)
    frame, fit = pd.DataFrame(), {}
    if any(name not in DATA for name in names):
        frame = read_table(table, "--table")
        frame.attrs["source"] = str(table)  # named by placeholder figures
        fit = json.loads(Path(fits).read_text())
    frames = {
        key: pd.concat([read_table(p, f"--data {key}") for p in paths], ignore_index=True)
        for key, paths in (data or {}).items()
        if paths
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        extra = {key: frames[key] for key in DATA.get(name, ()) if key in frames}
        fig = FIGURES[name](frame, fit, **extra)
        for ext in ("png", "pdf"):
            fig.savefig(out_dir / f"{name}.{ext}", bbox_inches="tight", dpi=150)
            written.append(out_dir / f"{name}.{ext}")
        plt.close(fig)
    return written
