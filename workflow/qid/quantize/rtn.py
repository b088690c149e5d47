"""Round-to-nearest (RTN): per-group asymmetric min-max quantization of the transformer blocks'
Linear weights, the no-calibration baseline.

Written by hand because it is the reference point the libraries are measured against and fits in
a screen. The quantized checkpoint stores the dequantized weights (a plain transformers
checkpoint, loadable anywhere), so evaluation measures exactly the rounding error.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def quantize_tensor(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Quantize-dequantize `w` ([out, in]) in groups of `group_size` input columns (-1: row)."""
    out_features, in_features = w.shape
    g = in_features if group_size in (-1, 0) or group_size >= in_features else group_size
    if in_features % g:
        raise ValueError(f"group_size {group_size} does not divide the input width {in_features}")
    groups = w.float().reshape(out_features, in_features // g, g)
    lo = groups.amin(dim=-1, keepdim=True)
    hi = groups.amax(dim=-1, keepdim=True)
    qmax = 2**bits - 1
    scale = ((hi - lo) / qmax).clamp(min=1e-12)
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(groups / scale) + zero, 0, qmax)
    return ((q - zero) * scale).reshape(out_features, in_features).to(w.dtype)


def quantizable_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The Linear layers inside the decoder blocks (what GPTQ quantizes): not embeddings/head."""
    head = model.get_output_embeddings()
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not head and ".layers." in f".{name}"
    }


@torch.no_grad()
def quantize_model(model: torch.nn.Module, bits: int, group_size: int) -> int:
    layers = quantizable_linears(model)
    for module in layers.values():
        module.weight.copy_(quantize_tensor(module.weight, bits, group_size))
    return len(layers)


def quantize(checkpoint: Path, out: Path, bits: int, options: dict, calibration=None) -> dict:
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="auto")
    n = quantize_model(model, bits, options.get("group_size", 128))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    return {"backend": "qid.rtn", "quantized_layers": n, "storage": "dequantized"}


def load(path: Path):
    return AutoModelForCausalLM.from_pretrained(path, dtype="auto").eval()
