import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from qid.evaluate import evaluate, windows

TEXTS = [
    "The congress shall consider the new tax laws of the union. " * 6,
    "A short one.",
    "Trade is fair and steady, and the union is strong.",
]


def test_windows_predict_every_token_once():
    ids = list(range(1, 300))
    ws = windows(ids, bos=0, context=64)
    assert all(len(w) <= 64 for w in ws)
    predicted = [t for w in ws for t in w[1:]]
    assert predicted == ids


def test_loss_equals_a_hand_computation(tiny_checkpoint, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    context = 16  # forces several windows per text
    result = evaluate(model, tokenizer, TEXTS, context=context, batch_tokens=40)
    total, count = 0.0, 0
    with torch.no_grad():
        for text in TEXTS:
            ids = [tokenizer.bos_token_id, *tokenizer(text)["input_ids"]]
            for start in range(0, len(ids) - 1, context - 1):
                x = torch.tensor([ids[start : start + context]])
                total += model(input_ids=x, labels=x).loss.item() * (x.shape[1] - 1)
                count += x.shape[1] - 1
    assert result["nll_sum"] == pytest.approx(total, rel=1e-5)
    assert result["model_tokens"] == count
    assert result["loss_per_model_token"] == pytest.approx(total / count, rel=1e-5)
    assert np.sum(result["nll_per_text"]) == pytest.approx(result["nll_sum"])


def test_loss_is_normalised_by_the_reference_tokenizer(tiny_checkpoint, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    own = evaluate(model, tokenizer, TEXTS, context=32, batch_tokens=256)

    class Chars:  # a reference tokenizer with one token per character
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [list(t) for t in texts]}

    ref = evaluate(
        model, tokenizer, TEXTS, context=32, batch_tokens=256, reference_tokenizer=Chars()
    )
    assert ref["nll_sum"] == pytest.approx(own["nll_sum"])
    assert ref["reference_tokens"] == sum(map(len, TEXTS))
    assert ref["loss"] == pytest.approx(own["nll_sum"] / sum(map(len, TEXTS)))
    assert own["loss"] == pytest.approx(own["loss_per_model_token"])


def test_an_empty_eval_set_is_refused(tiny_checkpoint, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    with pytest.raises(ValueError, match="eval set is empty"):
        evaluate(model, tokenizer, [], context=32, batch_tokens=256)


def test_auto_batch_tokens_follow_free_memory(tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    from qid.evaluate import CPU_BATCH_TOKENS, auto_batch_tokens

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    assert auto_batch_tokens(model, 32) == CPU_BATCH_TOKENS  # no GPU: the CPU default
    per_token = 3 * model.config.vocab_size * 4 + 16 * model.config.hidden_size * 4
    got = auto_batch_tokens(model, 32, free_bytes=2**30)
    assert got % 32 == 0 and got * per_token <= 0.5 * 2**30 < (got + 32) * per_token
    assert auto_batch_tokens(model, 32, free_bytes=2**31) > got
    assert auto_batch_tokens(model, 32, free_bytes=1) == 32  # never below one window
