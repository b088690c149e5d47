"""Checkpoints by training: a GPT-NeoX suite from random init, saved at log-spaced steps like
Pythia's revisions (one directory per step), with D and N recorded exactly.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

from qid.bitnet import to_bitnet
from qid.grid import CHECKPOINT_META
from qid.integrity import checkpoint_fingerprint


def model_config(arch: dict, vocab_size: int, context: int, rotary_pct: float) -> GPTNeoXConfig:
    # Pythia's architecture: parallel residual, partial rotary, untied input/output embeddings.
    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=arch["hidden_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        intermediate_size=arch.get("intermediate_size", 4 * arch["hidden_size"]),
        max_position_embeddings=context,
        rotary_pct=rotary_pct,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )


def non_embedding_params(model: torch.nn.Module) -> int:
    """N as in Kaplan et al. and the paper: all parameters but the embeddings (token and learned
    position embeddings, every `nn.Embedding`) and the output head, counted once when tied."""
    embeddings = {
        id(p)
        for m in (
            *(m for m in model.modules() if isinstance(m, torch.nn.Embedding)),
            model.get_input_embeddings(),
            model.get_output_embeddings(),
        )
        if m is not None
        for p in m.parameters()
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to `min_ratio * peak` at `total` (step counts from 1)."""
    if step <= warmup:
        return peak * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def batches(ids: np.ndarray, context: int, batch_size: int, steps: int, seed: int):
    """Seeded order over non-overlapping windows; one pass (an epoch) before any window repeats.

    The order depends on the seed only, so every size sees the same tokens at the same step.
    """
    n_windows = (ids.size - 1) // context
    order = np.random.default_rng(seed).permutation(n_windows)
    for step in range(steps):
        take = order[np.arange(step * batch_size, (step + 1) * batch_size) % n_windows]
        yield torch.from_numpy(
            np.stack([ids[i * context : (i + 1) * context] for i in take]).astype(np.int64)
        )


def train(
    suite: str,
    size: str,
    arch: dict,
    training: dict,
    steps: list[int],
    seed: int,
    train_ids: Path,
    tokenizer_dir: Path,
    out_dir: Path,
    log_path: Path,
    threads: int = 1,
    bitnet: bool = False,
) -> pd.DataFrame:
    """Train one size, saving a checkpoint at every step of `steps` and the loss per step.

    bitnet: BitNet b1.58 (qid.bitnet) from the same seeded init and batches as the 16-bit model.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ctx, bs = training["context"], training["batch_size"]
    model = GPTNeoXForCausalLM(
        model_config(arch, len(tokenizer), ctx, training.get("rotary_pct", 0.25))
    )
    if bitnet:
        to_bitnet(model)
    n_params = non_embedding_params(model)
    ids = np.load(train_ids)
    tokens_per_step = ctx * bs
    total = steps[-1]
    epochs = total * bs / ((ids.size - 1) // ctx)
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    optim = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": training["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=training["lr"],
        betas=tuple(training["betas"]),
    )
    log, saves = [], set(steps)
    model.train()
    bar = tqdm(
        batches(ids, ctx, bs, total, seed), total=total, desc=f"{suite}/{size}", mininterval=5
    )
    start = time.perf_counter()
    for step, x in enumerate(bar, start=1):
        lr = lr_at(step, training["lr"], training["warmup_steps"], total, training["min_lr_ratio"])
        for group in optim.param_groups:
            group["lr"] = lr
        loss = model(input_ids=x, labels=x).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        log.append(
            {
                "step": step,
                "tokens": step * tokens_per_step,
                "loss": loss.item(),
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
        )
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step in saves:
            save(
                model,
                tokenizer,
                out_dir / f"step{step}",
                {
                    "suite": suite,
                    "size": size,
                    "step": step,
                    "tokens": step * tokens_per_step,
                    "tokens_per_step": tokens_per_step,
                    "n_params": n_params,
                    "epochs_at_step": step * bs / ((ids.size - 1) // ctx),
                    "seed": seed,
                    "bitnet": bitnet,
                },
            )
    frame = pd.DataFrame(log).assign(suite=suite, size=size, n_params=n_params, bitnet=bitnet)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(log_path)
    if epochs > 1:
        tqdm.write(
            f"warning: {suite}/{size} trained {epochs:.2f} epochs; checkpoints past the "
            "first epoch see repeated data (the paper skips those)"
        )
    return frame


def save(model, tokenizer, path: Path, meta: dict) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {**meta, **checkpoint_fingerprint(path)}  # hashed as written: what later stages read
    (path / CHECKPOINT_META).write_text(json.dumps(meta, indent=2) + "\n")


def read_meta(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / CHECKPOINT_META
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} has no {CHECKPOINT_META}")
    return json.loads(path.read_text())
