"""BitNet b1.58 (Ma et al., 2024), the native low-bit model of the paper's Sec. 4.4 (Fig. 14).

Every Linear of the GPT-NeoX decoder blocks becomes a BitLinear: in the forward pass its weights
are ternary {-1, 0, +1} times one absmean scale and its inputs are 8-bit absmax per token; the
backward pass goes straight through both roundings to the full-precision latent weights that the
optimiser updates. Embeddings, the output head and the LayerNorms stay in full precision.

Written here, not taken from PyPI: `bitlinear-pytorch` is these same few lines but hides the
ternary codes and scale the tests check; `bitlinear` defaults to an absmedian scale and an extra
LayerNorm inside every layer (not b1.58 as specified, and a twin that differs by more than
quantization) and builds its parts with eval(); `bitnet` pulls in a large unrelated stack. None
knows GPT-NeoX checkpoints, which must come back as BitNet after a save.

b1.58's recipe also adds an RMSNorm before each BitLinear (SubLN) and drops biases; both are left
out so that the BitNet model and its 16-bit twin differ by the quantization alone (GPT-NeoX
already normalises the inputs of query_key_value and dense_h_to_4h).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from qid import QidError

CONFIG_FLAG = "qid_bitnet"  # set in a BitNet model's config.json: reloading re-applies the swap
EPS = 1e-5  # floor of both scales, as in the b1.58 reference code


def ternary(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """absmean quantization: codes in {-1, 0, 1} and the scale mean|w|; w ~ codes * scale."""
    scale = w.abs().mean().clamp(min=EPS)
    return (w / scale).round().clamp(-1, 1), scale


def absmax_8bit(x: torch.Tensor) -> torch.Tensor:
    """Per-token absmax quantize-dequantize of activations to the 8-bit range [-128, 127]."""
    scale = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=EPS)
    return (x * scale).round().clamp(-128, 127) / scale


def straight_through(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """`quantized` in the forward pass, the identity's gradient in the backward pass (STE)."""
    return x + (quantized - x).detach()


class BitLinear(nn.Linear):
    """nn.Linear whose forward uses ternary weights and 8-bit activations (BitNet b1.58).

    A subclass with the same parameters, so state dicts and checkpoints are those of nn.Linear.
    """

    def quantized_weight(self) -> torch.Tensor:
        codes, scale = ternary(self.weight)
        return codes * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = straight_through(self.weight, self.quantized_weight())
        return F.linear(straight_through(x, absmax_8bit(x)), w, self.bias)


def block_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linears of the decoder blocks (query_key_value, dense, dense_h_to_4h, dense_4h_to_h),
    not the output head: what BitNet ternarises and what the PTQ methods quantize."""
    head = model.get_output_embeddings()
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and m is not head and ".layers." in f".{name}"
    }


def to_bitnet(model: nn.Module) -> nn.Module:
    """Swap the decoder blocks' Linears for BitLinears in place (sharing their parameters, so
    the optimiser and the initialisation are the 16-bit twin's) and flag the config."""
    for name, linear in block_linears(model).items():
        if isinstance(linear, BitLinear):
            continue
        parent_name, _, child = name.rpartition(".")
        bit = BitLinear(linear.in_features, linear.out_features, bias=False, device="meta")
        bit.weight, bit.bias = linear.weight, linear.bias
        setattr(model.get_submodule(parent_name), child, bit)
    setattr(model.config, CONFIG_FLAG, True)
    return model


def is_bitnet(model: nn.Module) -> bool:
    return bool(getattr(model.config, CONFIG_FLAG, False))


def restore(model: nn.Module) -> nn.Module:
    """A model loaded with from_pretrained: BitNet again if its config says it was trained so."""
    return to_bitnet(model) if is_bitnet(model) else model


# --- Sec. 4.4's comparison: BitNet's final loss beside its 16-bit twin's and 2-bit PTQ's ------

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
