"""A zoo of tiny causal LMs of many architectures, built from transformers configs (no download),
with a byte-level BPE and a toy language to train them on for a few seconds.

Widths are 72 (hidden) and 200 (MLP): common group sizes (32, 64, 128) divide neither, as on real
models (SmolLM's 576, Qwen2's 4864...). Used by the backend tests and the zoo tests.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

EOS = "<|endoftext|>"
HIDDEN, MLP, LAYERS, HEADS = 72, 200, 2, 4

# model_type -> config fields beyond the shared ones (each config class names its fields).
ARCHS: dict[str, dict] = {
    "llama": {"tie_word_embeddings": True},  # SmolLM-style: tied embeddings
    "qwen2": {"num_key_value_heads": 2},
    "mistral": {"num_key_value_heads": 2, "sliding_window": None},
    "phi3": {"num_key_value_heads": 4},
    "olmo2": {},
    "gpt_neox": {"rotary_pct": 0.25, "use_parallel_residual": True},
    "gpt2": {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_inner": MLP},
    "opt": {"ffn_dim": MLP, "word_embed_proj_dim": HIDDEN, "do_layer_norm_before": True},
}


def _language(seed: int = 1234, n_words: int = 300, fanout: int = 4):
    """A fixed toy language: pseudo-words from syllables, each followed by one of `fanout`."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(n_words)})
    successors = {w: rng.sample(words, fanout) for w in words}
    return words, successors


def make_texts(n: int, seed: int) -> list[str]:
    """Random walks on the toy language's bigram graph.

    Learnable (a trained model is far below log(vocab)), yet with hundreds of words in use the
    hidden activations are full-rank. Template text with a few dozen words made GPTQ look
    lossless even at 2 bits: it fits the low-rank calibration activations exactly.
    """
    words, successors = _language()
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        word = rng.choice(words)
        walk = [word]
        for _ in range(rng.randint(20, 60)):
            word = rng.choice(successors[word])
            walk.append(word)
        texts.append(" ".join(walk) + ".")
    return texts


def build_tokenizer(texts: list[str], vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS)


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def train(model, tokenizer, texts: list[str], steps: int = 60, lr: float = 5e-3) -> None:
    ids = [tokenizer(t)["input_ids"][:64] for t in texts]
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = [ids[i] for i in torch.randint(len(ids), (16,), generator=gen).tolist()]
        x, mask = pad_batch(batch, tokenizer.eos_token_id)
        labels = x.masked_fill(mask == 0, -100)
        loss = model(input_ids=x, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def config(arch: str, vocab_size: int, eos: int, positions: int = 128):
    from transformers import AutoConfig

    shared = {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": MLP,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "max_position_embeddings": positions,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
    }
    if arch == "gpt2":
        shared = {"vocab_size": vocab_size, "n_positions": positions, "bos_token_id": eos,
                  "eos_token_id": eos}  # fmt: skip
    return AutoConfig.for_model(arch, **shared, **ARCHS[arch])


def build(arch: str, path: Path, steps: int = 60, seed: int = 0) -> Path:
    """A tiny `arch` model trained `steps` steps on the toy language, saved at `path`."""
    from transformers import AutoModelForCausalLM

    texts = make_texts(300, seed=0)
    tokenizer = build_tokenizer(texts)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config(arch, len(tokenizer), tokenizer.eos_token_id))
    if steps:
        train(model, tokenizer, texts, steps)
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def mean_nll(model, tokenizer, texts: list[str]) -> float:
    """Mean next-token NLL of `model` on `texts` (each cut at 96 tokens), padding masked."""
    ids, mask = pad_batch([tokenizer(t)["input_ids"][:96] for t in texts], tokenizer.eos_token_id)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    nll = -torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    weight = mask[:, 1:].float()
    return float((nll * weight).sum() / weight.sum())
