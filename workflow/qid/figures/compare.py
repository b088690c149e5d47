"""Figs. 8-10: the law across eval sets, quantization methods and suites. The per-method and
leave-one-suite-out fits are `qid fit`'s (fits["by_method"], fits["suite_transfer"])."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from qid.figures.style import (
    decade_ticks,
    fit_title,
    listing,
    model_palette,
    model_rows,
    placeholder,
    source_name,
    stale_fits,
)
from qid.laws import bits_key, unified_from_fit, usable


def eval_set_pairs(table: pd.DataFrame, fits: dict) -> tuple[pd.DataFrame, str, list[str]]:
    """QiD of the same cells on the fit's eval set (A) and on each other eval set: rows with
    qid_A, qid_B (and their standard errors) per other eval set B; (frame, A, [B...])."""
    method = fits.get("meta", {}).get("method")
    rows = table if method is None else table[table["method"] == method]
    sets = sorted(rows["eval_set"].unique())
    first = fits.get("meta", {}).get("eval_set") or (sets[0] if sets else None)
    others = [s for s in sets if s != first]
    keys = [c for c in ("suite", "size", "step", "method", "bits") if c in rows.columns]
    base = model_rows(rows, {})
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
            f"{source_name(table)} holds {listing(sets)}",
        )
    pairs, first, others = eval_set_pairs(table, fits)
    palette = model_palette(pairs)
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
    size, with Eq. (8) fitted per method at that width (gamma drops out, fits["by_method"]), as
    in Fig. 9."""
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
            f"bitsandbytes at 4 bits); {source_name(table)} holds {held or 'no rows'}",
        )
    if "by_method" not in fits:
        return stale_fits("Fig. 9 - quantization methods compared", "by_method")
    eval_set = fits.get("meta", {}).get("eval_set")
    rows = model_rows(table, {"meta": {"eval_set": eval_set}})
    rows = rows[rows.bits.isin(list(widths))]
    methods = sorted({m for ms in widths.values() for m in ms})
    colors = dict(zip(methods, sns.color_palette("Set1", n_colors=len(methods)), strict=True))
    models = list(dict.fromkeys(rows.model))
    fig = plt.figure(figsize=(3.1 * len(models), 3.1 * len(widths)), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(widths), 1))
    for sub, (b, ms) in zip(subfigs, widths.items(), strict=True):
        axes = np.atleast_1d(sub.subplots(1, len(models), sharey=True))
        per_method = fits["by_method"].get(bits_key(b), {})
        laws = {
            m: (unified_from_fit(per_method[m]), per_method[m]["params"])
            for m in ms
            if "params" in per_method.get(m, {})
        }
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
            decade_ticks(ax)
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
    (fits["suite_transfer"]) predicts the held-out suite's QiD. Returns the held-out rows with
    `predicted` and `held_out` columns, and {held-out suite: the fit that predicted it}."""
    rows = model_rows(table, fits)
    transfer = fits["suite_transfer"]
    frames, used = [], {}
    for suite in sorted(rows["suite"].unique()):
        if suite not in transfer:
            continue
        fit = used[suite] = transfer[suite]
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
            f"Fig. 10 needs at least 2 suites; {source_name(table)} holds {listing(suites)}",
        )
    if "suite_transfer" not in fits:
        return stale_fits("Fig. 10 - transfer of the law to another suite", "suite_transfer")
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
        f"Fig. 10 - actual vs predicted QiD, each suite held out ({fit_title(fits)})", fontsize=10
    )
    return fig
