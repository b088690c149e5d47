"""Weight change between checkpoints (Fig. 12): known differences come out per layer type."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from qid.grid import CHECKPOINT_META
from qid.weights import LAYER_TYPES, block_weights, changes, dynamics, layer_type


def test_layer_types_of_gpt_neox_parameter_names():
    assert layer_type("gpt_neox.layers.3.attention.query_key_value.weight") == "query_key_value"
    assert layer_type("gpt_neox.layers.0.attention.dense.weight") == "dense"
    assert layer_type("gpt_neox.layers.11.mlp.dense_h_to_4h.weight") == "dense_h_to_4h"
    assert layer_type("gpt_neox.layers.1.mlp.dense_4h_to_h.weight") == "dense_4h_to_h"
    for other in (
        "gpt_neox.layers.1.mlp.dense_4h_to_h.bias",
        "gpt_neox.embed_in.weight",
        "embed_out.weight",
        "gpt_neox.layers.0.input_layernorm.weight",
    ):
        assert layer_type(other) is None, other


def shifted_copy(src, dst, step: int, shift: dict[str, float]) -> None:
    """A copy of checkpoint `src` at `step` with `shift[type]` added to that type's weights."""
    shutil.copytree(src, dst)
    (file,) = dst.glob("*.safetensors")
    tensors = load_file(file)
    for name, tensor in tensors.items():
        if layer_type(name) in shift:
            tensors[name] = tensor + shift[layer_type(name)]
    save_file(tensors, file, metadata={"format": "pt"})
    meta = json.loads((dst / CHECKPOINT_META).read_text())
    (dst / CHECKPOINT_META).write_text(json.dumps({**meta, "step": step, "tokens": 64 * step}))


def test_changes_between_two_checkpoints_with_a_known_difference(tiny_checkpoint, tmp_path):
    size_dir = tmp_path / "h64-l2"
    shutil.copytree(tiny_checkpoint, size_dir / "step10")
    shift = {"query_key_value": 0.5, "dense_4h_to_h": -0.25}
    # Steps out of name order (step30 < step100 as text): ordered by the recorded step.
    shifted_copy(tiny_checkpoint, size_dir / "step100", 100, shift)
    shifted_copy(tiny_checkpoint, size_dir / "step30", 30, {})

    before = block_weights(size_dir / "step10")
    assert len(before) == 4 * 2 and {layer_type(n) for n in before} == set(LAYER_TYPES)
    direct = changes(before, block_weights(size_dir / "step100")).set_index("layer_type")
    assert direct.mean_abs_change["query_key_value"] == pytest.approx(0.5)
    assert direct.mean_abs_change["dense_4h_to_h"] == pytest.approx(0.25)
    assert direct.mean_abs_change["dense"] == direct.mean_abs_change["dense_h_to_4h"] == 0
    qkv = torch.cat([w.ravel() for n, w in before.items() if "query_key_value" in n]).double()
    assert direct.rel_change["query_key_value"] == pytest.approx(
        0.5 * qkv.numel() ** 0.5 / qkv.norm().item()
    )
    assert direct.n_weights["query_key_value"] == 2 * 192 * 64

    moves, samples = dynamics([size_dir], per_type=3, seed=1)
    assert moves.groupby(["step_from", "step"]).ngroups == 2
    first = moves[moves.step == 30].set_index("layer_type")
    assert (first.mean_abs_change == 0).all() and (first.steps_between == 20).all()
    second = moves[moves.step == 100].set_index("layer_type")
    assert second.step_from.unique().tolist() == [30] and (second.steps_between == 70).all()
    assert second.mean_abs_change["query_key_value"] == pytest.approx(0.5)
    assert second.tokens.unique().tolist() == [6400]
    # Sampled weights: the same 3 weights per type at every step, moving by the known shift.
    assert len(samples) == 3 * len(LAYER_TYPES) * 3
    wide = samples.pivot(index="weight", columns="step", values="value")
    kinds = samples.drop_duplicates("weight").set_index("weight").layer_type
    moved = (wide[100] - wide[10]).groupby(kinds).mean()
    assert moved["query_key_value"] == pytest.approx(0.5, abs=1e-6)
    assert moved["dense_4h_to_h"] == pytest.approx(-0.25, abs=1e-6)
    assert (wide[30] == wide[10]).all()
    again = dynamics([size_dir], per_type=3, seed=1)[1]
    assert again.equals(samples)  # seeded


def test_a_checkpoint_without_safetensors_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        block_weights(tmp_path)
