"""Shared fixtures: a tiny GPT-NeoX checkpoint with its own byte-level BPE, made in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qid.grid import CHECKPOINT_META

TEXTS = [
    f"Message {i}: the state of the union is {w}, and the congress shall {v} the {n} laws."
    for i, (w, v, n) in enumerate(
        (w, v, n)
        for w in ("strong", "sound", "good", "steady", "fair")
        for v in ("consider", "pass", "review", "amend")
        for n in ("new", "old", "tax", "trade")
    )
]


@pytest.fixture(scope="session")
def tokenizer():
    from qid.data import train_tokenizer

    return train_tokenizer(TEXTS * 3, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer) -> Path:
    import torch
    from transformers import GPTNeoXForCausalLM

    from qid.checkpoints import model_config, non_embedding_params

    torch.manual_seed(0)
    arch = {"hidden_size": 64, "num_layers": 2, "num_heads": 2}
    model = GPTNeoXForCausalLM(model_config(arch, len(tokenizer), 64, 0.25)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "step10"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {
        "suite": "t",
        "size": "h64-l2",
        "step": 10,
        "tokens": 640,
        "seed": 0,
        "n_params": non_embedding_params(model),
    }
    (path / CHECKPOINT_META).write_text(json.dumps(meta))
    return path
