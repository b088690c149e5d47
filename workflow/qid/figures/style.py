"""What every figure shares: the rows a figure draws, labels, palettes, ticks, placeholders."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # figures go to files; no display, whatever the environment says
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def count_label(n: float) -> str:
    """A parameter count as the paper writes it: 0.79M, 160M, 2.8B."""
    value, unit = (n / 1e9, "B") if n >= 1e9 else (n / 1e6, "M")
    return f"{value:.3g}{unit}" if value >= 100 else f"{value:.2g}{unit}"


def model_rows(table: pd.DataFrame, fits: dict) -> pd.DataFrame:
    """The table's rows of the fit's method and eval set, sorted by N and D, with a `model`
    label per size."""
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
        + f" (N={count_label(row['n_params'])})"
        for _, row in order.iterrows()
    }
    model = [labels[key] for key in zip(*(table[k] for k in keys), strict=True)]
    return table.assign(model=model)


def model_labels(frame: pd.DataFrame) -> pd.Series:
    """'size (N=0.79M)', with the suite in front where there are several."""
    suites = "suite" in frame.columns and frame["suite"].nunique() > 1
    prefix = frame["suite"].astype(str) + " " if suites else ""
    return (
        prefix
        + frame["size"].astype(str)
        + frame["n_params"].map(lambda n: f" (N={count_label(n)})")
    )


def model_palette(rows: pd.DataFrame) -> dict:
    models = rows.drop_duplicates("model").model
    return dict(zip(models, sns.color_palette(n_colors=len(models)), strict=True))


def bits_palette(widths: Iterable[float]) -> dict:
    """Discrete colours per bit width, dark (fewest bits) to light, none too pale to see."""
    widths = sorted(widths)
    return dict(zip(widths, sns.color_palette("rocket", n_colors=len(widths) + 1), strict=False))


def plain_log_ticks(g: sns.FacetGrid) -> None:
    """Label only the decades of log axes: minor-tick labels overlap on short ranges."""
    for ax in g.axes.flat:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def sci_label(value: float, _pos: int | None = None) -> str:
    """2e5 as 2x10^5 (math text), 1e6 as 10^6."""
    if value <= 0:
        return ""
    exponent = int(np.floor(np.log10(value) + 1e-9))
    mantissa = round(value / 10.0**exponent, 6)
    if mantissa == 1:
        return f"$10^{{{exponent}}}$"
    return f"${mantissa:g}\\times10^{{{exponent}}}$"


def decade_ticks(ax: plt.Axes, axis: str = "x") -> None:
    """Readable ticks on a log axis: decades only, or 1-2-5 steps where the data spans less
    than about a decade and a half (where decades alone would leave one tick or none)."""
    target = getattr(ax, f"{axis}axis")
    lo, hi = sorted(getattr(ax, f"get_{axis}lim")())
    if lo > 0 and hi / lo < 30:
        target.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(matplotlib.ticker.FuncFormatter(sci_label))
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


def bound(x: float | None) -> str:
    """An interval bound: null in fits.json where lmfit could not estimate it."""
    return "n/a" if x is None else f"{x:.3g}"


def fit_title(fits: dict) -> str:
    meta = fits.get("meta", {})
    return f"{meta.get('method') or 'all methods'} on {meta.get('eval_set') or 'all eval sets'}"


# Where the data lacks what a figure needs, the figure is a placeholder that says what it needs
# and what the data holds, so that every rule and the report still work.


def source_name(table: pd.DataFrame) -> str:
    """The table's file name where make_all recorded it, for placeholder messages."""
    return table.attrs.get("source", "the QiD table")


def listing(values: Iterable) -> str:
    values = sorted(map(str, values))
    return f"{len(values)} ({', '.join(values)})" if values else "none"


def placeholder(title: str, message: str) -> plt.Figure:
    """A small figure that says why the real one cannot be drawn from this data."""
    fig, ax = plt.subplots(figsize=(7, 1.9))
    ax.axis("off")
    text = "\n".join(textwrap.wrap(message, 80, break_on_hyphens=False))
    ax.text(0.5, 0.62, title, ha="center", va="bottom", fontsize=12, weight="bold")
    ax.text(0.5, 0.55, text, ha="center", va="top", fontsize=10, color="0.25")
    return fig


def stale_fits(title: str, key: str) -> plt.Figure:
    """The placeholder for fits.json written by a qid that did not fit what `key` holds."""
    return placeholder(title, f"the fits have no {key!r} (written by an older qid): rerun qid fit")
