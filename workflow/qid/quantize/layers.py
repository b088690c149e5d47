"""The linear maps of any transformers causal LM, found by what they are, not by their names.

A linear map is an `nn.Linear` (weight [out, in]) or a GPT-2-style `Conv1D` (weight [in, out]:
GPT-2, GPT-J's ancestors, BLOOM-era models). Methods quantize the ones inside the decoder blocks;
the output head and embeddings are left alone, and everything left is listed with its reason, so
a cell's record says exactly what was quantized.

The decoder blocks are found as the model's `nn.ModuleList` of `num_hidden_layers` modules, which
every transformers causal LM has (`model.layers`, `transformer.h`, `gpt_neox.layers`,
`model.decoder.layers`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from qid import QidError

if TYPE_CHECKING:  # torch is imported where a model is looked at: the dry run's width checks
    import torch  # (neox_layers, check_group_size) must not pay ~1.6 s for it
    from torch import nn

# The config key every group size comes from (error messages name it).
GROUP_KEY = "methods.{method}.group_size"


def _conv1d_type() -> type:
    # Imported when a model is surveyed: the dry run only needs `neox_layers`.
    from transformers.pytorch_utils import Conv1D

    return Conv1D


@dataclass(frozen=True)
class Layer:
    """One linear map: its module name, kind and widths (in_features is what groups divide)."""

    name: str
    kind: str  # "Linear" or "Conv1D"
    in_features: int
    out_features: int

    @property
    def params(self) -> int:
        return self.in_features * self.out_features


@dataclass
class Survey:
    """The model's linear maps to quantize, and everything left alone with the reason."""

    layers: list[Layer] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def record(self) -> dict:
        """The fields a cell's JSON record carries."""
        return {
            "quantized_layers": len(self.layers),
            "quantized_params": self.params,
            "layer_kinds": sorted({layer.kind for layer in self.layers}),
            "skipped_layers": dict(self.skipped),
        }


def as_layer(name: str, module: nn.Module) -> Layer | None:
    """A `Layer` for a linear map, None for any other module."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return Layer(name, "Linear", module.in_features, module.out_features)
    if isinstance(module, _conv1d_type()):
        n_in, n_out = module.weight.shape
        return Layer(name, "Conv1D", n_in, n_out)
    return None


def num_blocks(config) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text, key, None)
        if isinstance(value, int):
            return value
    return None


def blocks_prefix(model: nn.Module) -> str:
    """Module name of the decoder blocks' ModuleList (e.g. 'model.layers', 'transformer.h')."""
    from torch import nn

    n = num_blocks(model.config)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and n:
            if any(as_layer(sub, m) for sub, m in module.named_modules()):
                return name
    raise QidError(
        f"{type(model).__name__}: no list of {n} decoder blocks holding linear layers was found"
    )


def survey(model: nn.Module, include_head: bool = False) -> Survey:
    """The linear maps a method quantizes: those in the decoder blocks (plus the output head with
    `include_head`); the rest, with embeddings, in `skipped` with the reason."""
    from torch import nn

    head = model.get_output_embeddings()
    prefix = blocks_prefix(model) + "."
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    out = Survey()
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            out.skipped[name] = "embedding"
            continue
        layer = as_layer(name, module)
        if layer is None:
            continue
        if module is head:
            if include_head:
                out.layers.append(layer)
            else:
                out.skipped[name] = "output head" + (" (tied to the input embeddings)" * tied)
        elif name.startswith(prefix):
            out.layers.append(layer)
        else:
            out.skipped[name] = "outside the decoder blocks"
    return out


def modules(model: nn.Module, layers: list[Layer]) -> dict[str, nn.Module]:
    by_name = dict(model.named_modules())
    return {layer.name: by_name[layer.name] for layer in layers}


def weight_in_out(module: nn.Module) -> torch.Tensor:
    """The weight as [out, in] (a view: Conv1D stores [in, out])."""
    from torch import nn

    return module.weight if isinstance(module, nn.Linear) else module.weight.T


def meta_model(checkpoint: str | Path):
    """The checkpoint's architecture on the meta device: widths and names, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(checkpoint)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def neox_layers(hidden_size: int, intermediate_size: int | None = None) -> list[Layer]:
    """The linear maps of one GPT-NeoX block (what a trained suite's config fixes), by name."""
    mlp = intermediate_size or 4 * hidden_size
    return [
        Layer("attention.query_key_value", "Linear", hidden_size, 3 * hidden_size),
        Layer("attention.dense", "Linear", hidden_size, hidden_size),
        Layer("mlp.dense_h_to_4h", "Linear", hidden_size, mlp),
        Layer("mlp.dense_4h_to_h", "Linear", mlp, hidden_size),
    ]


def check_group_size(
    layers: list[Layer], group_size: int, method: str, partial_groups: bool, where: str = ""
) -> None:
    """One line naming the first layer `group_size` cannot serve, and the config key.

    `partial_groups`: the method quantizes a width the group size does not divide with a shorter
    last group (RTN, GPTQ), so only a group wider than the layer is refused there.
    """
    key = GROUP_KEY.format(method=method)
    if group_size == 0 or group_size < -1:
        raise QidError(f"config key {key!r}: group size {group_size} is not valid (-1 or >= 1)")
    if group_size == -1:
        return
    for layer in layers:
        width = layer.in_features
        problem = None
        if group_size > width:
            problem = "is wider than the layer"
        elif width % group_size and not partial_groups:
            problem = f"does not divide its input width, which {method} requires"
        if problem:
            raise QidError(
                f"config key {key!r}: group size {group_size} {problem}: layer {layer.name!r}"
                f"{where} has input width {width}; use a group size that divides it, or -1"
            )
