"""Sec. 4.4's comparison (`qid bitnet`): the final loss of BitNet b1.58 models beside their
16-bit twins' and the twins' 2-bit post-training quantization, from evaluation records and the
QiD table. Apart from qid.bitnet's BitLinear so that the table job imports no torch."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from qid import QidError

KEYS = ["suite", "size", "step", "eval_set"]


def read_evals(paths: list[Path]) -> list[dict]:
    """The BitNet models' eval records; one line naming a file that is not a JSON record."""
    records = []
    for path in paths:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise QidError(f"eval record {str(path)!r} is not JSON ({err})") from None
    return records


def compare(evals: list[dict], table: pd.DataFrame, bits: int = 2) -> pd.DataFrame:
    """One row per BitNet evaluation (size x eval set): its loss, the 16-bit twin's loss at the
    same checkpoint step and each PTQ method's loss at `bits` bits, from the QiD table (all
    losses from qid.evaluate on the same texts); gap_16 = BitNet - 16-bit, gap_<method> =
    BitNet - PTQ (negative: BitNet is better)."""
    columns = ["suite", "size", "n_params", "step", "tokens", "eval_set", "loss"]
    bitnet = pd.DataFrame(evals)[columns].rename(columns={"loss": "loss_bitnet"})
    if not {*KEYS, "method", "bits", "loss_16", "loss_q"} <= set(table.columns):
        table = pd.DataFrame(columns=[*KEYS, "method", "bits", "loss_16", "loss_q"])
    loss16 = table.drop_duplicates(KEYS)[[*KEYS, "loss_16"]]
    out = bitnet.merge(loss16, on=KEYS, how="left")
    out["gap_16"] = out.loss_bitnet - out.loss_16
    for method, part in table[table.bits == bits].groupby("method"):
        name = f"{method}_{bits}bit"
        part = part[[*KEYS, "loss_q"]].rename(columns={"loss_q": f"loss_{name}"})
        out = out.merge(part, on=KEYS, how="left")
        out[f"gap_{name}"] = out.loss_bitnet - out[f"loss_{name}"]
    return out.sort_values(["suite", "n_params", "eval_set"], ignore_index=True)


def to_markdown(frame: pd.DataFrame) -> str:
    """The comparison as a Markdown table, losses in nats per token, '-' where missing."""
    losses = [c for c in frame.columns if c.startswith("loss_")]
    names = {c: c.removeprefix("loss_").replace("_", " ").replace("bit", "-bit") for c in losses}
    names.update({"loss_bitnet": "BitNet b1.58", "loss_16": "16-bit"})
    head = ["suite", "size", "N", "step", "eval set", *(names[c] for c in losses)]
    head += ["BitNet - 16-bit"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|---|---|---:|---:|---|" + "---:|" * (len(losses) + 1),
    ]

    def cell(value) -> str:
        return "-" if pd.isna(value) else f"{value:.4f}"

    for row in frame.itertuples(index=False):
        r = row._asdict()
        values = [cell(r[c]) for c in [*losses, "gap_16"]]
        lines.append(
            f"| {r['suite']} | {r['size']} | {r['n_params']:,} | {r['step']} | {r['eval_set']} | "
            + " | ".join(values)
            + " |"
        )
    notes = (
        "Eval loss (nats per reference token, qid.evaluate) of the final BitNet b1.58 models, of "
        "their 16-bit twins (same data, seed, init and token budget) at the same step, and of "
        "the twins quantized post-training; BitNet - 16-bit < 0: BitNet is better."
    )
    title = "**BitNet b1.58 vs its 16-bit twin vs post-training quantization**"
    return "\n".join([title, "", *lines, "", notes]) + "\n"
