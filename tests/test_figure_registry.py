"""The figure registry is light (Snakemake imports it on every parse) and names, for each
figure, the function that draws it, the other tables it reads and its caption."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qid import QidError, figures
from qid.figures import DATA, FIGURES

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_registry_draws_in_no_plotting_or_fitting_library():
    """Snakemake imports qid.figures on every parse (dry runs included): it must stay light."""
    heavy = ("matplotlib", "seaborn", "lmfit", "scipy", "torch", "pandas", "qid.laws")
    code = f"import sys, qid.figures; print([m for m in {heavy!r} if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"


def test_the_registry_names_data_captions_and_lazily_loaded_drawers():
    assert DATA == {
        "fig12_weight_change": ("weight_changes", "weight_samples"),
        "fig14_bitnet": ("train",),
    }
    for name, figure in FIGURES.items():
        assert (ROOT / "workflow" / figure.caption).is_file(), name
        assert figures.load(name).__name__ == name
    with pytest.raises(QidError, match="unknown figure 'fig13'.*fig1_projection, .*fig14_bitnet"):
        figures.load("fig13")
