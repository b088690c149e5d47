"""What `qid fit` writes (fits.json): every law and form on one method and eval set, and the
side fits the figures draw, so that every number a figure or table shows comes from here."""

from __future__ import annotations

import pandas as pd

from qid import QidError
from qid.laws.compare import compare_forms
from qid.laws.equations import LAWS
from qid.laws.exclude import drop_collapsed, drop_flagged, fittable
from qid.laws.fit import fit_law, fit_loss16
from qid.laws.validate import validate

REQUIRED = ["tokens", "n_params", "bits", "qid"]


def select(table: pd.DataFrame, column: str, value: str | None) -> pd.DataFrame:
    if value is not None:
        if value not in set(table[column]):
            raise QidError(
                f"{column} {value!r} is not in the table "
                f"(present: {', '.join(map(str, sorted(set(table[column]))))})"
            )
        return table[table[column] == value]
    values = sorted(set(table[column]))
    if len(values) > 1:
        raise QidError(
            f"the table holds several values of {column} ({', '.join(map(str, values))})"
            f": choose one with --{column.replace('_', '-')}"
        )
    return table


def bits_key(bits: float) -> str:
    """A bit width as fits.json keys it: "4", or "1.58"."""
    return str(int(bits)) if float(bits).is_integer() else str(bits)


def fit_by(
    table: pd.DataFrame,
    column: str,
    method: str | None = None,
    eval_set: str | None = None,
    **kwargs,
) -> dict[str, dict]:
    """Eq. (8) fitted separately per value of `column` ("method" or "bits"): {value: fit}.
    With one bit width per fit gamma is fixed to 0 (P drops out), as for Table 1's 3- and
    4-bit columns and Fig. 9. `kwargs` go to `fit_law`."""
    for col, value in (("method", method), ("eval_set", eval_set)):
        if col in table.columns and col != column:
            table = select(table, col, value)
    keys = bits_key if column == "bits" else str
    return {
        keys(value): fit_law(table[table[column] == value], "unified", **kwargs)
        for value in sorted(set(table[column]))
    }


def _in_figure_order(rows: pd.DataFrame) -> pd.DataFrame:
    # The row order the figures fitted in when they fitted these laws themselves: the fit's
    # last digits depend on it, and this keeps the figures' numbers to the bit.
    return rows.sort_values(["n_params", "tokens"])


def fit_by_method(rows: pd.DataFrame, **options) -> dict[str, dict[str, dict]]:
    """Fig. 9's laws: Eq. (8) per method at each bit width that at least 2 methods of `rows`
    (one eval set, all methods) hold, {bits_key: {method: fit}}. The widths and methods come
    from all of `rows`, the fits from the rows fit_all keeps (a method left with none: skipped).
    `options` go to `fit_law`."""
    if "method" not in rows.columns:
        return {}
    kept = fittable(_in_figure_order(rows))
    out = {}
    for bits, methods in rows.groupby("bits")["method"].unique().items():
        if len(methods) < 2:
            continue
        at = kept[kept["bits"] == bits]
        out[bits_key(bits)] = {
            m: fit_law(at[at["method"] == m], "unified", **options) for m in sorted(methods)
        }
    return out


def fit_suite_transfer(rows: pd.DataFrame, **options) -> dict[str, dict]:
    """Fig. 10's laws: for each suite of `rows` (one method and eval set), Eq. (8) fitted on
    the rows fit_all keeps in every other suite, {held-out suite: fit}; {} with fewer than 2
    suites. `options` go to `fit_law`."""
    if "suite" not in rows.columns or rows["suite"].nunique() < 2:
        return {}
    kept = fittable(_in_figure_order(rows))
    return {
        str(suite): fit_law(kept[kept["suite"] != suite], "unified", **options)
        for suite in sorted(rows["suite"].unique())
    }


def fit_all(
    table: pd.DataFrame,
    method: str | None = None,
    eval_set: str | None = None,
    confidence: float = 0.95,
    weighted: bool = True,
    loss: str = "linear",
    starts: int = 1,
    bootstrap: int = 0,
    seed: int = 0,
    validation: bool = False,
    likelihood: str = "log",
    metric: str = "qid",
) -> dict:
    """Eq. (5)-(8) on one method and eval set; with several bit widths also Eq. (8) per bit
    width ("by_bits"); Eq. (8) per method at the bit widths several methods share, on the same
    eval set ("by_method", Fig. 9) and without each suite ("suite_transfer", Fig. 10); Eq. (3)
    on the 16-bit losses ("loss16") where the table has them; the rival forms side by side
    ("compare", laws.compare); held-out errors ("validation")
    when asked. meta.range is the unified fit's domain.
    Rows whose checkpoint is flagged (column `flag`, qid.integrity) or whose loss collapsed
    (column `status`, qid.aggregate; "excluded" has "collapsed" where the table has `status`)
    are left out of every fit and named in "excluded".
    metric "kl" fits every law to the KL from the 16-bit model (columns kl, kl_se) in place of
    QiD (qid.divergence); meta.metric says which."""
    if metric == "kl":
        if "kl" not in table.columns:
            raise QidError("--metric kl: the table has no column kl (rerun qid aggregate)")
        table = table.assign(qid=table["kl"], qid_se=table.get("kl_se", float("nan")))
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise QidError(f"table lacks column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    every_method = table
    for column, value in (("method", method), ("eval_set", eval_set)):
        if column in table.columns:
            table = select(table, column, value)
    if table.empty:
        raise QidError("no rows to fit")
    if "eval_set" in every_method.columns:  # all methods, on the eval set just selected
        every_method = every_method[every_method["eval_set"].isin(set(table["eval_set"]))]
    selected = table
    table, collapsed = drop_collapsed(table)
    table, flagged = drop_flagged(table)
    if metric == "kl" and table["qid"].isna().any():  # not a result: a record older than KL
        first = table[table["qid"].isna()].iloc[0]
        cell = "/".join(str(first[c]) for c in ("size", "step", "method", "bits") if c in first)
        raise QidError(
            f"--metric kl: {int(table['qid'].isna().sum())} cell(s) have no kl, e.g. {cell}"
            " (evaluated before KL was measured: remove their eval records and rerun)"
        )
    options = dict(
        confidence=confidence, weighted=weighted, loss=loss, starts=starts, likelihood=likelihood
    )
    fits = {"unified": fit_law(table, "unified", **options, bootstrap=bootstrap, seed=seed)}
    fits.update({law: fit_law(table, law, **options) for law in LAWS if law != "unified"})
    if "params" not in fits["unified"]:
        raise QidError(f"cannot fit the unified law: {fits['unified']['skipped']}")
    if table["bits"].nunique() > 1:
        fits["by_bits"] = fit_by(table, "bits", **options, bootstrap=bootstrap, seed=seed)
    fits["by_method"] = fit_by_method(every_method, **options)
    fits["suite_transfer"] = fit_suite_transfer(selected, **options)
    if "loss_16" in table.columns:
        try:
            fits["loss16"] = fit_loss16(table, confidence)
        except QidError as err:
            fits["loss16"] = {"skipped": str(err)}
    # Rival forms (Eq. 8, Kumar et al.'s exponential, the lr covariate) on the same rows.
    fits["compare"] = compare_forms(table, confidence, weighted, loss)
    if validation:
        fits["validation"] = validate(table, weighted=weighted, loss=loss)
    fits["meta"] = {
        "method": method,
        "eval_set": eval_set,
        "metric": metric,
        "rows": len(table),
        "space": "log" if likelihood == "log" else "linear",
        "likelihood": likelihood,
        "confidence": confidence,
        "weighted": fits["unified"]["weighted"],
        "loss": loss,
        "bootstrap": bootstrap,
        "range": fits["unified"]["range"],
    }
    fits["excluded"] = {"flagged": flagged}
    if "status" in table.columns:  # a table from qid aggregate, which marks collapsed cells
        fits["excluded"]["collapsed"] = collapsed
    return fits
