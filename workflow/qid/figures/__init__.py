"""The paper's figures: a light registry, read when Snakemake parses the workflow.

Each figure has a name, the function that draws it (imported only when it is drawn, so that
parsing the workflow does not import matplotlib, seaborn or the fitting code), the other tables
it draws from (`qid figures --data` keys) and its caption in the report. Figures only draw:
every number they show is in the QiD table, the fits or those other tables."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qid import QidError


@dataclass(frozen=True)
class Figure:
    name: str
    draws: str  # "module:function" under qid.figures
    data: tuple[str, ...] = ()  # other tables than the QiD table and the fits, by --data key

    @property
    def caption(self) -> str:
        """The caption's path relative to workflow/ (the report renders it)."""
        return f"report/{self.name}.rst"


_FIGURES = [
    Figure("fig1_projection", "projection:fig1_projection"),
    Figure("fig2_qid_vs_tokens", "scaling:fig2_qid_vs_tokens"),
    Figure("fig3_tokens_law", "scaling:fig3_tokens_law"),
    Figure("fig4_size_law", "scaling:fig4_size_law"),
    Figure("fig5_bits_law", "scaling:fig5_bits_law"),
    Figure("fig6_unified_law", "scaling:fig6_unified_law"),
    Figure("fig7_loss_prediction", "prediction:fig7_loss_prediction"),
    Figure("fig8_eval_sets", "compare:fig8_eval_sets"),
    Figure("fig9_methods", "compare:fig9_methods"),
    Figure("fig10_suite_transfer", "compare:fig10_suite_transfer"),
    Figure("fig11_qid_surface", "scaling:fig11_qid_surface"),
    Figure(
        "fig12_weight_change", "dynamics:fig12_weight_change", ("weight_changes", "weight_samples")
    ),
    Figure("fig14_bitnet", "dynamics:fig14_bitnet", ("train",)),
    # Beyond the paper (issue 13): the rival law forms side by side, QiD per lr schedule.
    Figure("forms_compare", "forms:forms_compare"),
    Figure("lr_schedule", "schedule:lr_schedule"),
]

# Every figure by name, in the paper's order, then the figures beyond the paper.
FIGURES: dict[str, Figure] = {f.name: f for f in _FIGURES}

# Figures drawn from other tables than the QiD table: figure -> its `qid figures --data` keys.
DATA: dict[str, tuple[str, ...]] = {f.name: f.data for f in _FIGURES if f.data}


def load(name: str) -> Callable[..., Any]:
    """The function that draws figure `name`: (table, fits, **data) -> a matplotlib Figure."""
    if name not in FIGURES:
        raise QidError(f"unknown figure {name!r}; the figures: {', '.join(FIGURES)}")
    module, function = FIGURES[name].draws.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)
