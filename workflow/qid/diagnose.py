"""`qid diagnose`: how far a model is trained, judged by its QiD (Sec. 4.2 of the paper).

Sec. 4.2 reads a QiD near 0 after low-bit quantization as the sign of an undertrained model, and
uses Eq. (8) inverted to give the training tokens at which QiD reaches 0.2, 0.3, 0.4 and 0.5
(Table 1) as graded levels of "fully trained": QiD 0.2 is a likelihood cut to ~80% (e^-0.2),
0.5 to ~60%. Here a measured QiD of a model with N parameters at P bits is turned into an
estimate of its training tokens D, with an interval, and placed against those levels.
The law only answers inside the range of N, D and P it was fitted on, unless told to extrapolate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from qid import QidError
from qid.laws import draws_law, interval, parameter_draws, unified_from_fit
from qid.table1 import LEVELS, law_for

NAMES = {"n_params": "N", "tokens": "D", "bits": "P"}


def check_range(fit: dict, extrapolate: bool = False, **values: float) -> list[str]:
    """Raise a one-line QidError for the first of `values` (n_params, tokens, bits) outside
    the fit's range; with `extrapolate`, return the complaints as warnings instead."""
    problems = []
    for column, value in values.items():
        lo, hi = fit.get("range", {}).get(column, (-np.inf, np.inf))
        if not lo <= value <= hi:
            problems.append(
                f"{NAMES[column]} = {value:.4g} is outside the range the law was fitted on "
                f"({NAMES[column]} in [{lo:.4g}, {hi:.4g}])"
            )
    if problems and not extrapolate:
        raise QidError(problems[0] + "; pass --extrapolate to answer anyway")
    return problems


def diagnose(
    qid: float,
    n: float,
    bits: float,
    fits: dict | None = None,
    qid_se: float | None = None,
    by_bits: bool = False,
    confidence: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
    extrapolate: bool = False,
) -> dict:
    """Estimate the training tokens D behind a measured `qid` (nats) of a model with `n`
    non-embedding parameters at `bits` bits, from `fits` (a fits.json dict; None: the published
    law). The interval combines the law's uncertainty (bootstrap draws, else the normal
    approximation of its covariance) with the measurement's (`qid_se`), by sampling."""
    if not qid > 0:
        raise QidError(
            f"QiD = {qid:g} <= 0 cannot be inverted: by Sec. 4.2 a QiD near 0 marks an "
            "undertrained model (or the measurement's noise floor)"
        )
    fit, source = law_for(fits, bits, by_bits)
    warnings = check_range(fit, extrapolate, n_params=n, bits=bits)
    law = unified_from_fit(fit)
    tokens = float(law.tokens_for(qid, n, bits))
    warnings += check_range(fit, extrapolate, tokens=tokens)

    rng = np.random.default_rng(seed)
    draws, ci = parameter_draws(fit, samples, seed)
    measured = np.full(samples if draws is None else len(draws), qid, dtype=float)
    if qid_se:
        measured = rng.normal(qid, qid_se, len(measured))
        # A draw at or below 0 says "no QiD yet": the law would put it at D = 0.
        measured = np.where(measured > 0, measured, np.nan)
        ci = "measurement only" if draws is None else f"{ci} + measurement"
    low = high = None
    if draws is not None or qid_se:
        spread_law = law if draws is None else draws_law(draws)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            spread = np.ravel(spread_law.tokens_for(measured[:, None], n, bits))
        spread = np.where(np.isnan(measured), 0.0, spread)
        low, high = (float(v) for v in interval(spread, confidence))

    thresholds = {f"{q:g}": float(law.tokens_for(q, n, bits)) for q in LEVELS}
    reached = [q for q in LEVELS if qid >= q]
    return {
        "qid": qid,
        "qid_se": qid_se,
        "n_params": n,
        "bits": bits,
        "tokens": tokens,
        "tokens_low": low,
        "tokens_high": high,
        "confidence": confidence,
        "ci": ci if low is not None else "none",
        "law": source,
        "thresholds": thresholds,
        "levels_reached": reached,
        "verdict": _verdict(qid, reached, tokens, thresholds),
        "warnings": warnings,
    }


def measure(
    checkpoint: Path,
    texts: Path,
    method: str,
    bits: int,
    options: dict,
    calibration: list[str] | None = None,
    **evaluation,
) -> dict:
    """QiD of `checkpoint` quantized with (method, bits) on `texts`, its paired standard error
    and the model's non-embedding N: what `diagnose` needs, measured as a grid cell is. Any
    causal LM directory works (no qid metadata needed)."""
    from qid.aggregate import paired_se
    from qid.evaluate import run
    from qid.quantize import quantize_cell

    with tempfile.TemporaryDirectory(prefix="qid-diagnose-") as tmp:
        work = Path(tmp)
        (base,) = run(checkpoint, [texts], [work / "base.json"], **evaluation)
        quantize_cell(checkpoint, work / "q", work / "q.json", method, bits, options, calibration)
        (quant,) = run(
            checkpoint,
            [texts],
            [work / "q-eval.json"],
            method=method,
            bits=bits,
            quantized=work / "q",
            **evaluation,
        )
    return {
        "qid": quant["loss"] - base["loss"],
        "qid_se": paired_se(quant["nll_per_text"], base["nll_per_text"], base["reference_tokens"]),
        "n_params": base["n_params"],
        "loss_16": base["loss"],
        "loss_q": quant["loss"],
    }


def _verdict(qid: float, reached: list[float], tokens: float, thresholds: dict) -> str:
    first = thresholds[f"{LEVELS[0]:g}"]
    if not reached:
        return (
            f"QiD {qid:.3g} is below {LEVELS[0]:g}, the lowest training level of Sec. 4.2 / "
            f"Table 1: undertrained by the paper's measure (D is {tokens / first:.2g}x the "
            f"{first:.3g} tokens at which the law reaches QiD {LEVELS[0]:g})"
        )
    if len(reached) == len(LEVELS):
        return f"QiD {qid:.3g} is past the highest level, {LEVELS[-1]:g}: fully trained or beyond"
    return (
        f"QiD {qid:.3g} has reached the {reached[-1]:g} level but not "
        f"{LEVELS[len(reached)]:g}: fully trained by the paper's QiD >= {LEVELS[0]:g} measure"
    )
