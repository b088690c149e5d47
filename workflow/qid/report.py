"""results/summary.md: the fitted laws, with their intervals, beside the paper's numbers."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from qid.laws.paper import (
    BITS,
    LEVELS,
    PUBLISHED,
    PUBLISHED_DATA,
    PUBLISHED_LOSS16,
    SINGLE_FACTOR,
    TABLE1,
)
from qid.table1 import table1


def _g(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.4g}"


def _ci(p: dict) -> str:
    return f"[{_g(p['ci_low'])}, {_g(p['ci_high'])}]"


def _boot(fit: dict, name: str) -> str:
    b = fit.get("bootstrap", {}).get("params", {}).get(name)
    return f"[{_g(b['low'])}, {_g(b['high'])}]" if b else "–"


def _unified(fit: dict) -> list[str]:
    n_boot = fit.get("bootstrap", {}).get("n", 0)
    lines = [
        "| parameter | this study | 95% CI (lmfit) | 95% CI (bootstrap, "
        f"{n_boot} resamples) | paper (Fig. 6) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, paper in asdict(PUBLISHED).items():
        if name in fit["params"]:
            p = fit["params"][name]
            lines.append(
                f"| {name} | {_g(p['value'])} | {_ci(p)} | {_boot(fit, name)} | {paper:g} |"
            )
        else:
            lines.append(f"| {name} | fixed at {fit['fixed'].get(name, 0):g} | – | – | {paper:g} |")
    lines += [
        "",
        f"R²(log) {_g(fit['r2_log'])}, R² {_g(fit['r2'])}, AIC {_g(fit['aic'])}, "
        f"BIC {_g(fit['bic'])}; {fit['n_points']} cells fitted, {fit['n_excluded']} "
        "excluded (QiD ≤ 0 or not finite).",
    ]
    return lines


REASONS = {
    "duplicate_weights": "its weights (or a weight file) are those of",
    "loss_rise": "its 16-bit loss rose by more than its standard error from",
}


def _reason(flag: str) -> str:
    """'duplicate_weights:step8,step24' -> 'its weights ... of step8, step24'."""
    parts = (part.partition(":") for part in flag.split("; "))
    return "; ".join(
        f"{REASONS.get(kind, kind)} {other.replace(',', ', ')}".strip() for kind, _, other in parts
    )


def _flagged(flagged: list[dict]) -> list[str]:
    """The checkpoints the fits left out (qid.integrity), each with why."""
    if not flagged:
        return []
    lines = [
        "",
        "## Checkpoints left out of the fits",
        "",
        f"{len(flagged)} checkpoint(s) flagged as suspect: their rows stay in "
        "`results/qid.parquet` (column `flag`) but no law is fitted to them.",
        "",
        "| suite | size | step | flag | why |",
        "|---|---|---:|---|---|",
    ]
    for f in flagged:
        lines.append(
            f"| {f.get('suite', '')} | {f.get('size', '')} | {f.get('step', '')} | "
            f"`{f['flag']}` | {_reason(f['flag'])} |"
        )
    return lines


def _collapsed(collapsed: list[dict]) -> list[str]:
    """The cells the fits left out because a loss is NaN or infinite, each with which."""
    if not collapsed:
        return []
    lines = [
        "",
        "## Collapsed cells left out of the fits",
        "",
        f"{len(collapsed)} cell(s) collapsed (a loss is NaN or infinite): their rows stay in "
        "`results/qid.parquet` (column `status`) but no law is fitted to them.",
        "",
        "| suite | size | step | method | bits | eval set | why |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for c in collapsed:
        cells = (c.get(k, "") for k in ("suite", "size", "step", "method", "bits", "eval_set"))
        lines.append("| " + " | ".join(map(str, cells)) + f" | {c.get('why', '')} |")
    return lines


def _compare(compare: dict) -> list[str]:
    """The rival forms side by side (fits["compare"], laws.compare)."""
    from qid.laws.forms import FORMS

    lines = [
        "",
        "## Rival forms side by side (same rows)",
        "",
        f"{compare.get('rows')} cells. Held-out error: {compare.get('error')}; per family: "
        "each size left out, the last steps left out, each bit width left out (with >= 3).",
        "",
        "| form | equation | parameters [95% CI] | held-out: all | size | steps | bits "
        "| AIC | BIC |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in FORMS:
        fit = compare.get(name, {})
        if "params" not in fit:
            lines.append(f"| {name} | not fitted: {fit.get('skipped', 'absent')} | | | | | | | |")
            continue
        params = "; ".join(f"{k} {_g(p['value'])} {_ci(p)}" for k, p in fit["params"].items())
        held = fit["held_out"]
        family = (_g(held["by_family"].get(f)) for f in ("size", "steps", "bits"))
        lines.append(
            f"| {name} | {fit['equation']} | {params} | {_g(held['rmse_log'])} | "
            + " | ".join(family)
            + f" | {_g(fit['aic'])} | {_g(fit['bic'])} |"
        )
    lines += [
        "",
        f"Best (lowest held-out error): **{compare.get('best')}**. Comparable "
        f"({compare.get('rule')}): {', '.join(compare.get('comparable', [])) or '–'}; "
        f"the simplest of them: {compare.get('simplest')}.",
    ]
    return lines


def summary(fits: dict) -> str:
    meta = fits.get("meta", {})
    weighting = "weighted by qid/qid_se" if meta.get("weighted") else "unweighted"
    out = [
        "# QiD scaling laws: this study beside the paper",
        "",
        f"Fitted to method **{meta.get('method')}** on eval set **{meta.get('eval_set')}** "
        f"({meta.get('rows')} rows; log-space {meta.get('loss', 'linear')} least squares, "
        f"{weighting}). Range fitted: "
        + ", ".join(f"{k} {_g(lo)}–{_g(hi)}" for k, (lo, hi) in meta.get("range", {}).items())
        + f". The paper's numbers come from {PUBLISHED_DATA}.",
        "",
        "## Eq. (8), unified: QiD = k·D^β / (N^α·P^γ)",
        "",
        *_unified(fits["unified"]),
        "",
        "## Eq. (5)–(7), one factor at a time",
        "",
        "| law | exponent | this study [95% CI] | paper |",
        "|---|---|---:|---:|",
    ]
    for law, (name, paper) in SINGLE_FACTOR.items():
        fit = fits.get(law, {})
        value = (
            f"{_g(fit['params'][name]['value'])} {_ci(fit['params'][name])}"
            if "params" in fit
            else f"not fitted: {fit.get('skipped')}"
        )
        out.append(f"| {law} | {name} | {value} | {paper:g} |")
    if fits.get("by_bits"):
        out += [
            "",
            "## Eq. (8) per bit width (γ fixed; Table 1's per-bit laws)",
            "",
            "| bits | k | α [95% CI] | β [95% CI] | cells |",
            "|---|---:|---:|---:|---:|",
        ]
        for bits, fit in fits["by_bits"].items():
            if "params" not in fit:
                out.append(f"| {bits} | not fitted: {fit.get('skipped')} | | | |")
                continue
            p = fit["params"]
            out.append(
                f"| {bits} | {_g(p['k']['value'])} | {_g(p['alpha']['value'])} "
                f"{_ci(p['alpha'])} | {_g(p['beta']['value'])} {_ci(p['beta'])} | "
                f"{fit['n_points']} |"
            )
    loss16 = fits.get("loss16", {})
    out += ["", "## Eq. (3), the 16-bit loss", ""]
    if "params" in loss16:
        out += ["| parameter | this study [95% CI] | paper (Fig. 7) |", "|---|---:|---:|"]
        for name, paper in asdict(PUBLISHED_LOSS16).items():
            p = loss16["params"][name]
            out.append(f"| {name} | {_g(p['value'])} {_ci(p)} | {paper:g} |")
    else:
        out.append(f"Not fitted: {loss16.get('skipped', 'the table has no loss_16')}.")
    validation = fits.get("validation")
    if validation:
        out += [
            "",
            "## Held-out validation (Eq. 8 refitted without each part)",
            "",
            "| held out | cells | RMSE of log QiD | mean abs. error (nats) | note |",
            "|---|---:|---:|---:|---|",
        ]
        for fold in validation["folds"]:
            # A fold without a number says why (not fitted, or nothing to measure on).
            note = fold.get("skipped") or fold.get("note")
            out.append(
                f"| {fold['held_out']} | {fold.get('n_test', 0)} | {_g(fold.get('rmse_log'))} | "
                f"{_g(fold.get('mae_nats'))} | {note or ''} |"
            )
    if "compare" in fits:
        out += _compare(fits["compare"])
    out += _flagged(fits.get("excluded", {}).get("flagged", []))
    out += _collapsed(fits.get("excluded", {}).get("collapsed", []))
    out += ["", "## Table 1 check: the published law against the paper's printed 2-bit column", ""]
    published = table1(None, bits=BITS[:1]).set_index(["model", "qid"])
    worst = max(
        abs(published.loc[(m, q), "tokens_t"] / TABLE1[m][i][0] - 1)
        for m in TABLE1
        for i, q in enumerate(LEVELS)
    )
    out.append(
        f"Largest relative deviation over the 16 cells: {worst:.1%} (the printed column "
        "implies slightly different exponents than the rounded published ones)."
    )
    return "\n".join(out) + "\n"
