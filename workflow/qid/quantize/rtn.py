"""Round-to-nearest (RTN): per-group asymmetric min-max quantization of the linear maps in the
decoder blocks (`nn.Linear` and GPT-2's `Conv1D`, found by `qid.quantize.layers`), the
no-calibration baseline.

Written by hand because it is the reference point the libraries are measured against and fits in
a screen. The quantized checkpoint stores the dequantized weights (a plain transformers
checkpoint, loadable anywhere), so evaluation measures exactly the rounding error.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qid.quantize import METHODS
from qid.quantize import layers as found

RTN = METHODS["rtn"]


def _minmax(groups: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize-dequantize along the last dimension: one scale and zero point per group."""
    lo = groups.amin(dim=-1, keepdim=True)
    hi = groups.amax(dim=-1, keepdim=True)
    qmax = 2**bits - 1
    scale = ((hi - lo) / qmax).clamp(min=1e-12)
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(groups / scale) + zero, 0, qmax)
    return (q - zero) * scale


def quantize_tensor(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Quantize-dequantize `w` ([out, in]) in groups of `group_size` input columns (-1: a row).

    A width the group size does not divide ends in a shorter last group, as GPTQModel's groups
    (column i belongs to group i // group_size).
    """
    out_features, in_features = w.shape
    if group_size == 0 or group_size < -1:
        raise ValueError(f"group_size {group_size} is not valid (-1 or >= 1)")
    g = in_features if group_size == -1 else min(group_size, in_features)
    full = in_features // g * g
    x = w.float()
    parts = [_minmax(x[:, :full].reshape(out_features, -1, g), bits).reshape(out_features, full)]
    if full < in_features:
        parts.append(_minmax(x[:, full:], bits))
    return torch.cat(parts, dim=1).to(w.dtype)


@torch.no_grad()
def quantize_model(
    model: torch.nn.Module, bits: int, group_size: int, include_head: bool = False
) -> found.Survey:
    """Quantize the model's linear maps in place; what was quantized and what was left."""
    survey = found.survey(model, include_head=include_head)
    for module in found.modules(model, survey.layers).values():
        weight = found.weight_in_out(module)  # a view of the stored weight
        weight.copy_(quantize_tensor(weight, bits, group_size))
    return survey


def check(model: torch.nn.Module, bits: int, options: dict) -> None:
    """Any width works (a shorter last group); a group wider than a layer would silently mix
    granularities, and is refused."""
    group_size = int(RTN.option(options, "group_size"))
    survey = found.survey(model, include_head=bool(RTN.option(options, "quantize_head")))
    method = options["method"]
    found.check_group_size(survey.layers, group_size, method, METHODS[method].partial_groups)


def quantize(checkpoint: Path, out: Path, bits: int, options: dict, calibration=None) -> dict:
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="auto")
    group_size = int(RTN.option(options, "group_size"))
    survey = quantize_model(model, bits, group_size, bool(RTN.option(options, "quantize_head")))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    return {"backend": "qid.rtn", "storage": "dequantized", **survey.record()}


def load(path: Path):
    return AutoModelForCausalLM.from_pretrained(path, dtype="auto").eval()
