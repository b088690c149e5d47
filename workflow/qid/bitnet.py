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

import torch
import torch.nn.functional as F
from torch import nn

from qid.bitnet_table import KEYS, compare, read_evals, to_markdown  # noqa: F401 (re-exported)

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
