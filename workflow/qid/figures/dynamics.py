"""Figs. 12 and 14 (training dynamics), drawn from other tables than the QiD table: the weight
changes of `qid weights` and the training logs of `qid train`, given as `qid figures --data`."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from qid.figures.style import decade_ticks, listing, model_labels, placeholder


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
        model=model_labels(moves),
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
            decade_ticks(ax)
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
            decade_ticks(ax)
        name = model_labels(largest.iloc[:1]).iloc[0]
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
            else listing(
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
        axes[i, 0].set_ylabel(f"{model_labels(run.iloc[:1]).iloc[0]}\ntraining loss (nats)")
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
