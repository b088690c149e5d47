"""`qid diagnose`: how far a model is trained, judged by its QiD (Sec. 4.2 of the paper).

Sec. 4.2 reads a QiD near 0 after low-bit quantization as the sign of an undertrained model, and
uses Eq. (8) inverted to give the training tokens at which QiD reaches 0.2, 0.3, 0.4 and 0.5
(Table 1) as graded levels of "fully trained": QiD 0.2 is a likelihood cut to ~80% (e^-0.2),
0.5 to ~60%. Here a measured QiD of a model with N parameters at P bits is turned into an
estimate of its training tokens D, with an interval, and placed against those levels.
The law only answers inside the range of N, D and P it was fitted on, unless told to extrapolate.

`qid diagnose --checkpoint` (`diagnose_checkpoint`) measures that QiD first: every input is
checked (qid.diagnose_inputs.prepare) before any weights load, the 16-bit model is evaluated once
and each (method, bits) cell is quantized, reloaded and evaluated (`measure_cells`); the
measurement is kept even where the law refuses to invert it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qid import QidError
from qid.diagnose_inputs import Plan, prepare
from qid.laws import draws_law, interval, outside, parameter_draws, unified_from_fit
from qid.laws.paper import LEVELS
from qid.table1 import law_for

NAMES = {"n_params": "N", "tokens": "D", "bits": "P"}
# What a cell's measurement carries beside QiD (qid.divergence), as its eval record names them.
DIVERGENCE = ("kl", "kl_se", "top1_agreement", "qid_bpb")


def check_range(fit: dict, extrapolate: bool = False, **values: float) -> list[str]:
    """Raise a one-line QidError for the first of `values` (n_params, tokens, bits) outside
    the fit's range; with `extrapolate`, return the complaints as warnings instead."""
    problems = [
        f"{NAMES[column]} = {values[column]:.4g} is outside the range the law was fitted on "
        f"({NAMES[column]} in [{lo:.4g}, {hi:.4g}])"
        for column, (lo, hi) in outside(fit, **values).items()
    ]
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


# --- measuring a checkpoint -------------------------------------------------------------------


def measure_cells(
    plan: Plan,
    progress: Callable[[str], None] = lambda line: None,
    on_cell: Callable[[dict, dict], None] = lambda base, cell: None,
    **evaluation,
) -> tuple[dict, list[dict]]:
    """Evaluate the 16-bit model once, then quantize, reload and evaluate each cell of `plan`.

    Returns the 16-bit measurement and one measurement per cell (QiD, its paired standard
    error, both losses, N, seconds, what the cell quantized); `on_cell` sees each as it is
    done, so that a later failure keeps the earlier cells."""
    from qid.aggregate import paired_se
    from qid.evaluate import run
    from qid.quantize import quantize_cell

    cells = []
    with tempfile.TemporaryDirectory(prefix="qid-diagnose-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        references: dict = {}  # the 16-bit model's top-k, for each cell's KL (qid.divergence)
        (b,) = run(
            plan.checkpoint,
            [plan.texts],
            [work / "base.json"],
            kl_reference=references,
            **evaluation,
        )
        base = {
            "loss_16": b["loss"],
            "n_params": b["n_params"],
            "texts": b["texts"],
            "reference_tokens": b["reference_tokens"],
            "bytes": b["bytes"],
            "seconds": round(time.perf_counter() - start, 3),
        }
        progress(
            f"16-bit: loss {b['loss']:.5f} on {b['texts']} texts, N = {b['n_params']:,} "
            f"({base['seconds']:.1f} s)"
        )
        for i, (method, bits, options) in enumerate(plan.cells):
            start = time.perf_counter()
            out = work / f"q{i}"
            progress(f"{method} {bits}-bit: quantizing")
            info = quantize_cell(
                plan.checkpoint,
                out,
                work / f"q{i}.json",
                method,
                bits,
                options,
                plan.calibration.get(method),
            )
            (q,) = run(
                plan.checkpoint,
                [plan.texts],
                [work / f"q{i}-eval.json"],
                method=method,
                bits=bits,
                quantized=out,
                kl_reference=references,
                **evaluation,
            )
            shutil.rmtree(out, ignore_errors=True)  # a real model's cells would fill the disk
            cell = {
                "method": method,
                "bits": bits,
                "qid": q["loss"] - b["loss"],
                "qid_se": paired_se(q["nll_per_text"], b["nll_per_text"], b["reference_tokens"]),
                **{k: q[k] for k in DIVERGENCE},
                "loss_16": b["loss"],
                "loss_q": q["loss"],
                "n_params": b["n_params"],
                "seconds": round(time.perf_counter() - start, 3),
                "quantize_seconds": info["seconds"],
                **{k: info.get(k) for k in ("quantized_layers", "quantized_params")},
                # What the backend calibrated on, where its record says (rows may be cut short
                # by the model's context or dropped as too short).
                **{k: info[k] for k in ("calibration_rows", "calibration_tokens") if k in info},
                "options": info["options"],
            }
            progress(
                f"measured: {method} {bits}-bit QiD {cell['qid']:.4g} (se {cell['qid_se']:.2g}) "
                f"nats, {divergence(cell)}{quantized_layers(cell)} "
                f"(quantized in {info['seconds']:.1f} s, {cell['seconds']:.1f} s in all)"
            )
            cells.append(cell)
            on_cell(base, cell)
    return base, cells


def divergence(cell: dict) -> str:
    """ "KL 0.0123 (se 0.001) nats, top-1 agreement 0.912, QiD 0.0101 bits/byte" """
    se = "none" if cell["kl_se"] is None else f"{cell['kl_se']:.2g}"
    return (
        f"KL {cell['kl']:.4g} (se {se}) nats, top-1 agreement {cell['top1_agreement']:.3f}, "
        f"QiD {cell['qid_bpb']:.4g} bits/byte"
    )


def quantized_layers(cell: dict) -> str:
    """ ", N layers (P parameters) quantized" where the backend's record says (not every one)."""
    if cell.get("quantized_layers") is None:
        return ""
    params = cell.get("quantized_params")
    return f", {cell['quantized_layers']} layers" + (
        f" ({params:,} parameters) quantized" if params is not None else " quantized"
    )


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
    plan = Plan(Path(checkpoint), Path(texts), [(method, bits, options)])
    if calibration is not None:
        plan.calibration[method] = calibration
    _, (cell,) = measure_cells(plan, **evaluation)
    return cell


def cell_entry(cell: dict) -> dict:
    """A measured cell as the result document holds it: what it is, and its measurement."""
    head = ("method", "bits", "options")
    measurement = {k: v for k, v in cell.items() if k not in head}
    return {**{k: cell[k] for k in head}, "measurement": measurement}


def estimate_cells(cells: list[dict], fits: dict | None = None, **law) -> list[dict]:
    """Each measured cell's entry with the law's estimate of D, or `estimate: None` and the
    reason the law refused it (`law`: the keywords of `diagnose`)."""
    out = []
    for cell in cells:
        entry = cell_entry(cell)
        try:
            entry["estimate"] = diagnose(
                cell["qid"], cell["n_params"], cell["bits"], fits, qid_se=cell["qid_se"], **law
            )
        except QidError as err:
            entry |= {"estimate": None, "refused": str(err)}
        out.append(entry)
    return out


def diagnose_checkpoint(
    checkpoint: Path,
    texts: Path,
    methods: list[str],
    bits: list[int],
    options: dict,
    calibration: Path | None = None,
    seed: int = 0,
    fits: dict | None = None,
    law: dict | None = None,
    out: Path | None = None,
    threads: int | None = None,
    progress: Callable[[str], None] = lambda line: None,
    on_measured: Callable[[Plan, dict, list[dict]], None] = lambda plan, doc, cells: None,
    **evaluation,
) -> dict:
    """Measure QiD of each (method, bits) of `checkpoint` on `texts`, then estimate D from each
    (`law`: the keywords of `diagnose`). The result document is saved to `out` as each cell is
    measured (a crash keeps the cells done) and once estimated; `on_measured` sees the
    measurement before the law is asked, as the measurement stands whatever the law says.
    What libraries print meanwhile goes to stderr: stdout holds the caller's output alone."""
    from qid.streams import stdout_to_stderr
    from qid.strict_json import save

    doc = {"checkpoint": str(checkpoint), "texts": str(texts)}
    with stdout_to_stderr():
        plan = prepare(checkpoint, texts, methods, bits, options, calibration, seed)
        for warning in plan.warnings:
            progress(f"warning: {warning}")
        doc |= {"calibration": plan.calibration_info, "base": None, "cells": []}

        def keep(base: dict, cell: dict) -> None:  # saved as measured: a crash keeps it
            doc["base"] = base
            doc["cells"].append(cell_entry(cell))
            save(out, doc)

        if threads:
            import torch

            torch.set_num_threads(threads)
        _, cells = measure_cells(plan, progress=progress, on_cell=keep, **evaluation)
    on_measured(plan, doc, cells)
    doc["cells"] = estimate_cells(cells, fits, **(law or {}))
    save(out, doc)
    return doc


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
