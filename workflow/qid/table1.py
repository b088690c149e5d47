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
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from qid import QidError
from qid.laws import PUBLISHED_FIT, draws_law, interval, parameter_draws, unified_from_fit

SIZES = {"1B": 1e9, "7B": 7e9, "70B": 70e9, "405B": 405e9}
LEVELS = (0.2, 0.3, 0.4, 0.5)
BITS = (2, 3, 4)
TRILLION = 1e12

# The paper's Table 1 as printed (trillions of tokens): per model, one (2, 3, 4 bits) triple per
# QiD level in LEVELS.
PAPER = {
    "1B": [
        (0.0011, 0.1089, 1.4424),
        (0.0025, 0.1990, 2.6786),
        (0.0043, 0.3051, 4.1556),
        (0.0066, 0.4251, 5.8422),
    ],
    "7B": [
        (0.0026, 0.3038, 4.5066),
        (0.0057, 0.5550, 8.3689),
        (0.0099, 0.8512, 12.9836),
        (0.0152, 1.1860, 18.2531),
    ],
    "70B": [
        (0.0071, 1.0228, 17.3499),
        (0.0154, 1.8687, 32.2192),
        (0.0267, 2.8659, 49.9854),
        (0.0409, 3.9932, 70.2723),
    ],
    "405B": [
        (0.0151, 2.5807, 48.4861),
        (0.0328, 4.7151, 90.0398),
        (0.0567, 7.2311, 139.6892),
        (0.0868, 10.0754, 196.3829),
    ],
}


def paper_value(model: str, level: float, bits: int) -> float:
    """The printed entry of Table 1 (trillions of tokens)."""
    return PAPER[model][LEVELS.index(level)][BITS.index(bits)]


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


def outside(fit: dict, n: float, tokens: float, bits: float) -> list[str]:
    """Which of N, D, P lie outside the range the fit saw (empty if none, or no range known)."""
    rng = fit.get("range", {})
    values = {"n_params": n, "tokens": tokens, "bits": bits}
    return [c for c, (lo, hi) in rng.items() if c in values and not lo <= values[c] <= hi]


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
                        "extrapolated": ",".join(outside(fit, n, tokens, p)),
                    }
                )
    return pd.DataFrame(rows)


def _cell(row) -> str:
    text = f"{row.tokens_t:.4f}"
    if np.isfinite(row.low_t):
        text += f" ({row.low_t:.4g}–{row.high_t:.4g})"
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
    if frame.extrapolated.ne("").any():
        notes.append("*: outside the range of N, D or P the law was fitted on (extrapolated).")
    return "\n".join(([f"**{title}**", ""] if title else []) + lines + [""] + notes) + "\n"
