import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from qid.checkpoints import batches, lr_at, non_embedding_params


def test_non_embedding_params_match_pythia_160m():
    # Pythia-160m's published non-embedding count (../shared/facts.md): 85,056,000.
    config = GPTNeoXConfig(
        vocab_size=50304,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        rotary_pct=0.25,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(config)
    assert non_embedding_params(model) == 85_056_000


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 1e-3, 10, 100, 0.1) for s in range(1, 101)]
    assert lrs[9] == pytest.approx(1e-3)
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))


def test_batches_stay_within_one_epoch_and_are_seeded():
    ids = np.arange(10_000, dtype=np.uint16)
    seen = torch.cat(list(batches(ids, context=10, batch_size=4, steps=50, seed=1)))
    starts = seen[:, 0].tolist()
    assert len(set(starts)) == len(starts) == 200  # no window repeats within the epoch
    again = torch.cat(list(batches(ids, context=10, batch_size=4, steps=50, seed=1)))
    assert torch.equal(seen, again)
