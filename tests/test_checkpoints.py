import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from qid.checkpoints import batches, non_embedding_params
from qid.schedule import lr_at

# Pythia's published non-embedding counts (../shared/facts.md) and each size's shape
# (hidden, layers, heads; MLP 4x hidden; vocabulary 50,304, 50,688 for 12b).
PYTHIA = {
    "160m": (768, 12, 12, 85_056_000),
    "410m": (1024, 24, 16, 302_311_424),
    "1b": (2048, 16, 8, 805_736_448),
    "2.8b": (2560, 32, 32, 2_517_652_480),
    "6.9b": (4096, 32, 32, 6_444_163_072),
    "12b": (5120, 36, 40, 11_327_027_200),
}


@pytest.mark.parametrize("size", list(PYTHIA))
def test_non_embedding_params_match_pythia(size):
    hidden, layers, heads, published = PYTHIA[size]
    config = GPTNeoXConfig(
        vocab_size=50688 if size == "12b" else 50304,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        rotary_pct=0.25,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(config)
    assert non_embedding_params(model) == published


def test_non_embedding_params_of_tied_and_position_embeddings():
    """Tied input/output embeddings are left out once; learned position embeddings (GPT-2, OPT)
    are embeddings too (Kaplan et al.'s N leaves out vocabulary and position embeddings)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    h, layers, mlp, vocab = 64, 2, 160, 500
    llama = {"hidden_size": h, "intermediate_size": mlp, "num_hidden_layers": layers,
             "num_attention_heads": 4, "vocab_size": vocab}  # fmt: skip
    blocks = layers * (4 * h * h + 3 * h * mlp + 2 * h) + h  # attention, MLP, 2 norms; final norm
    for tied in (True, False):
        model = LlamaForCausalLM(LlamaConfig(**llama, tie_word_embeddings=tied))
        assert non_embedding_params(model) == blocks
        total = sum(p.numel() for p in model.parameters())
        assert total == blocks + vocab * h * (1 if tied else 2)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=h, n_layer=layers, n_head=4, vocab_size=vocab))
    per_block = 12 * h * h + 13 * h  # Conv1D attention and MLP (4h) with biases, 2 LayerNorms
    assert non_embedding_params(gpt2) == layers * per_block + 2 * h


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
