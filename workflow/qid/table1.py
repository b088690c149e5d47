"""Table 1 of the paper: training tokens D at which a model of N parameters reaches a given QiD
at P bits, i.e. Eq. (8) inverted (`UnifiedLaw.tokens_for`), in trillions of tokens.

Convention for N: the rows "1B, 7B, 70B, 405B" are nominal parameter counts, N = 1e9, 7e9, 7e10,
4.05e11. With the published law this reproduces the paper's 2-bit column to within about 2%
(entries below 0.01 to the printed digit or one unit in the last place; the 405B row runs
1.3-1.8% high). No rescaling of N (e.g. to non-embedding counts) reproduces every printed
digit: the printed column itself implies 1/beta = 1.906..1.909 and alpha/beta = 0.4290..0.4296,
while the rounded published exponents give 1.904 and 0.4306, so the table was presumably
computed from unrounded fit parameters. The paper's 3- and 4-bit columns come from laws fitted
to one bit width at a time (facts.md), which it does not publish: `by_bits=True` reproduces
that approach from a fits.json with "by_bits" fits.

Beside each entry, where the fits compare rival forms (fits["compare"], laws.compare), the
spread of D across the forms that fit comparably (held-out error within one standard error of
the best's), each fitted to every bit width, the lr form for a fully decayed run: columns
`forms_low_t`, `forms_high_t`, `forms`. Far beyond the data is where the forms disagree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qid import QidError
from qid.laws import draws_law, interval, outside, parameter_draws, unified_from_fit
from qid.laws.compare import comparable_laws
from qid.laws.forms import tokens_for
from qid.laws.paper import BITS, LEVELS, PUBLISHED_FIT, SIZES

TRILLION = 1e12


def law_for(fits: dict | None, bits: int, by_bits: bool = False) -> tuple[dict, str]:
    """The fit that answers for `bits`: the published law (fits None), the unified fit, or,
    with `by_bits`, the fit to that bit width alone (falling back to the unified fit)."""
    if fits is None:
        return PUBLISHED_FIT, "published"
    key = str(int(bits))
    if by_bits and key in fits.get("by_bits", {}) and "params" in fits["by_bits"][key]:
        return fits["by_bits"][key], f"by_bits[{key}]"
    if "unified" not in fits or "params" not in fits["unified"]:
        raise QidError("the fits hold no unified fit (run qid fit first)")
    return fits["unified"], "unified"


def table1(
    fits: dict | None = None,
    sizes: dict[str, float] = SIZES,
    levels: tuple[float, ...] = LEVELS,
    bits: tuple[int, ...] = BITS,
    by_bits: bool = False,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Long table: one row per (model, level, bits) with tokens (trillions) and, where the fit
    has draws (bootstrap, else its covariance), a percentile interval."""
    rows = []
    forms = comparable_laws((fits or {}).get("compare"))
    for p in bits:
        fit, source = law_for(fits, p, by_bits)
        law = unified_from_fit(fit)
        draws, ci = parameter_draws(fit, seed=seed)
        for model, n in sizes.items():
            for q in levels:
                tokens = float(law.tokens_for(q, n, p))
                low = high = np.nan
                if draws is not None:
                    # Draws with beta near 0 send D to infinity: a real (open) upper end.
                    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                        spread = np.ravel(draws_law(draws).tokens_for(q, n, p))
                    low, high = (float(v) for v in interval(spread))
                across = [float(tokens_for(f, v, q, n, p)) for f, v in forms.values()]
                rows.append(
                    {
                        "model": model,
                        "n_params": n,
                        "qid": q,
                        "bits": p,
                        "tokens_t": tokens / TRILLION,
                        "low_t": low / TRILLION,
                        "high_t": high / TRILLION,
                        "ci": ci,
                        "law": source,
                        "extrapolated": ",".join(outside(fit, n_params=n, tokens=tokens, bits=p)),
                        "forms_low_t": min(across, default=np.nan) / TRILLION,
                        "forms_high_t": max(across, default=np.nan) / TRILLION,
                        "forms": ",".join(forms),
                    }
                )
    return pd.DataFrame(rows)


def _cell(row) -> str:
    text = f"{row.tokens_t:.4f}"
    if np.isfinite(row.low_t):
        text += f" ({row.low_t:.4g}–{row.high_t:.4g})"
    if np.isfinite(row.forms_low_t):
        text += f" [{row.forms_low_t:.4g}–{row.forms_high_t:.4g}]"
    return text + ("*" if row.extrapolated else "")


def to_markdown(frame: pd.DataFrame, title: str = "") -> str:
    """The paper's layout: one row per model, one column per (QiD level, bits)."""
    cols = [(q, p) for q in dict.fromkeys(frame.qid) for p in dict.fromkeys(frame.bits)]
    cells = frame.set_index(["model", "qid", "bits"])
    lines = [
        "| Model | " + " | ".join(f"ΔqLoss={q:g}, {p} bits" for q, p in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for model in dict.fromkeys(frame.model):
        row = [_cell(cells.loc[(model, q, p)]) for q, p in cols]
        lines.append(f"| {model} | " + " | ".join(row) + " |")
    laws = ", ".join(f"{p} bits: {law}" for p, law in frame.groupby("bits").law.first().items())
    notes = [
        "Training tokens (trillions) at which QiD reaches each level (Table 1, Eq. (8) inverted);"
        f" N = nominal parameter count. Laws: {laws}.",
    ]
    if frame.ci.ne("none").any():
        notes.append(f"Parentheses: percentile interval ({frame.ci.iloc[0]}).")
    if frame.forms.ne("").any():
        names = frame.forms.iloc[0].replace(",", ", ")
        notes.append(
            f"Brackets: the spread across the forms that fit comparably ({names};"
            " held-out error within one standard error of the best's), each fitted to every bit"
            " width, the lr form for a fully decayed run."
        )
    if frame.extrapolated.ne("").any():
        notes.append("*: outside the range of N, D or P the law was fitted on (extrapolated).")
    return "\n".join(([f"**{title}**", ""] if title else []) + lines + [""] + notes) + "\n"
