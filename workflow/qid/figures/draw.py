"""Reading the inputs once and writing each figure as PNG and PDF."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from qid import figures
from qid.data import read_table


def make_all(
    table: Path | None,
    fits: Path | None,
    out_dir: Path,
    names: list[str] | None = None,
    data: dict[str, list[Path]] | None = None,
) -> list[Path]:
    """Draw `names` (default: all figures). The QiD table and the fits are read only when a
    figure needs them; `data` gives the other tables by key (DATA), several files concatenated."""
    names = names or list(figures.FIGURES)
    draws = {name: figures.load(name) for name in names}  # an unknown name fails before reading
    frame, fit = pd.DataFrame(), {}
    if any(name not in figures.DATA for name in names):
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
        extra = {key: frames[key] for key in figures.DATA.get(name, ()) if key in frames}
        fig = draws[name](frame, fit, **extra)
        for ext in ("png", "pdf"):
            fig.savefig(out_dir / f"{name}.{ext}", bbox_inches="tight", dpi=150)
            written.append(out_dir / f"{name}.{ext}")
        plt.close(fig)
    return written
