"""How much the weights move between consecutive checkpoints (the paper's Fig. 12).

The paper's explanation of QiD: early checkpoints' weights still swing widely from one checkpoint
to the next, so the small shift quantization adds is within what the model tolerates; late
checkpoints barely move, so quantization pushes weights beyond their recent range. This module
measures that motion per layer type of the decoder blocks, read from the checkpoints' safetensors
files (no model is built), and follows a seeded sample of individual weights across checkpoints.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from qid.checkpoints import read_meta

LAYER_TYPES = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
# gpt_neox.layers.{i}.attention.query_key_value.weight, ... .mlp.dense_4h_to_h.weight
_BLOCK_WEIGHT = re.compile(r"\.layers\.(\d+)\.\w+\.(" + "|".join(LAYER_TYPES) + r")\.weight$")


def layer_type(name: str) -> str | None:
    """The layer type of a decoder-block Linear weight's name; None for anything else."""
    match = _BLOCK_WEIGHT.search(name)
    return match.group(2) if match else None


def block_weights(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The decoder blocks' Linear weights of a checkpoint (float32), by parameter name."""
    files = sorted(Path(checkpoint).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} has no *.safetensors file")
    weights = {}
    for file in files:
        for name, tensor in load_file(file).items():
            if layer_type(name):
                weights[name] = tensor.float()
    return weights


def changes(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> pd.DataFrame:
    """One row per layer type: mean |W_after - W_before| over all its weights, the change
    relative to the weight norm ||dW||_F / ||W_before||_F, and the mean |W_after|."""
    rows = []
    for kind in LAYER_TYPES:
        names = sorted(n for n in before if layer_type(n) == kind)
        if not names:
            continue
        missing = [n for n in names if n not in after]
        if missing:
            raise ValueError(f"the later checkpoint lacks {missing[0]!r}")
        delta = torch.cat([(after[n] - before[n]).ravel() for n in names]).double()
        w0 = torch.cat([before[n].ravel() for n in names]).double()
        w1 = torch.cat([after[n].ravel() for n in names]).double()
        rows.append(
            {
                "layer_type": kind,
                "n_weights": delta.numel(),
                "mean_abs_change": delta.abs().mean().item(),
                "rel_change": (delta.norm() / w0.norm()).item(),
                "mean_abs_weight": w1.abs().mean().item(),
            }
        )
    return pd.DataFrame(rows)


def sample_weights(
    weights: dict[str, torch.Tensor], per_type: int, seed: int
) -> list[tuple[str, int]]:
    """(parameter name, flat index) of `per_type` weights of each layer type, drawn uniformly
    over all the type's weights by a seeded generator (the same draw for every checkpoint)."""
    rng = np.random.default_rng(seed)
    picks = []
    for kind in LAYER_TYPES:
        names = sorted(n for n in weights if layer_type(n) == kind)
        if not names:
            continue
        sizes = np.array([weights[n].numel() for n in names])
        flat = rng.choice(sizes.sum(), size=min(per_type, sizes.sum()), replace=False)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for i in sorted(flat):
            p = int(np.searchsorted(offsets, i, side="right") - 1)
            picks.append((names[p], int(i - offsets[p])))
    return picks


def step_checkpoints(size_dir: str | Path) -> list[tuple[dict, Path]]:
    """The step*/ checkpoints of one model size, ordered by training step, with their meta."""
    found = [(read_meta(p), p) for p in Path(size_dir).glob("step*") if p.is_dir()]
    if not found:
        raise FileNotFoundError(f"no step*/ checkpoints under {str(size_dir)!r}")
    return sorted(found, key=lambda item: item[0]["step"])


def size_dynamics(size_dir: str | Path, per_type: int = 8, seed: int = 0):
    """(changes, samples) of one model size: changes between each pair of consecutive
    checkpoints, and the sampled weights' values at every checkpoint."""
    frames, samples = [], []
    previous, picks = None, None
    for meta, path in step_checkpoints(size_dir):
        weights = block_weights(path)
        ident = {k: meta.get(k) for k in ("suite", "size", "n_params")}
        if picks is None:
            picks = sample_weights(weights, per_type, seed)
        for name, index in picks:
            samples.append(
                {
                    **ident,
                    "step": meta["step"],
                    "tokens": meta["tokens"],
                    "layer_type": layer_type(name),
                    "weight": f"{name}[{index}]",
                    "value": weights[name].ravel()[index].item(),
                }
            )
        if previous is not None:
            before_meta, before = previous
            frames.append(
                changes(before, weights).assign(
                    **ident,
                    step_from=before_meta["step"],
                    step=meta["step"],
                    tokens=meta["tokens"],
                    steps_between=meta["step"] - before_meta["step"],
                )
            )
        previous = (meta, weights)
    empty = pd.DataFrame(columns=["layer_type", "step", "mean_abs_change"])
    return (pd.concat(frames, ignore_index=True) if frames else empty), pd.DataFrame(samples)


def dynamics(
    size_dirs: list[Path], per_type: int = 8, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """size_dynamics over several sizes (e.g. every size of a suite), concatenated."""
    parts = [size_dynamics(d, per_type, seed) for d in size_dirs]
    return (
        pd.concat([c for c, _ in parts], ignore_index=True),
        pd.concat([s for _, s in parts], ignore_index=True),
    )
