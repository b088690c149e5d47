"""The evaluator's tokens per second against a straightforward transformers loop.

Compared: `qid.evaluate.text_nll` (windows of all texts sorted by length and batched up to
`--batch-tokens`, right-padded only within a batch of near-equal lengths, under
`torch.inference_mode`) against the loop anyone would write first: one window at a time,
`model(ids, labels=ids)` under `torch.no_grad`, the mean loss multiplied back by the number of
tokens it predicted.

Why it is fair: the same model object (same weights, dtype, threads and attention kernel, SDPA
being transformers' default for GPT-NeoX), the same token ids and the same windows. Both score
each text as qid does (BOS + its tokens, cut into windows of `--context` tokens that overlap by one
token, `qid.evaluate.windows`), so both predict exactly the same tokens and their total losses
must agree; the script exits non-zero if they differ by more than 1e-4 nats per token.
Tokenisation is done once, outside both timings. Each side is warmed up first, and with
`--repeats` > 1 the order alternates and the median time is used.

Model: the largest trained checkpoint under results/ (and results/data/eval/sotu.parquet) if the
study has been run, else a seeded random-init GPT-NeoX of the shape given (default: the default
study's largest size, hidden 256, 4 layers, vocabulary 4,096) on the default study's in-domain
eval set (200 held-out sotu paragraphs, ~26k tokens). Without the sotu package the texts are
generated token ids of the same length distribution.

    python benchmarks/eval_throughput.py
"""

from __future__ import annotations

import argparse
import sys
import time

import common

MAX_LOSS_DIFF = 1e-4  # nats per token


def naive_nll(model, token_ids: list[list[int]], bos: int, context: int) -> float:
    """Total NLL (nats) of the texts, one window per forward, loss from `labels`."""
    import torch

    from qid.evaluate import windows

    device = next(model.parameters()).device
    total = 0.0
    with torch.no_grad():
        for ids in token_ids:
            for w in windows(ids, bos, context):
                x = torch.tensor([w], device=device)
                # labels=x: transformers shifts them and averages over the len(w) - 1 targets.
                total += model(x, labels=x).loss.item() * (len(w) - 1)
    return total


def qid_nll(model, token_ids: list[list[int]], bos: int, context: int, batch_tokens: int) -> float:
    from qid.evaluate import text_nll

    return float(text_nll(model, token_ids, bos, context, batch_tokens).sum())


def generated_ids(n_texts: int, vocab: int, seed: int) -> list[list[int]]:
    """Token ids with the sotu paragraphs' length distribution (median ~100, long tail)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(100), 0.6, n_texts).astype(int), 40, 1200)
    return [rng.integers(1, vocab, size=n).tolist() for n in lengths]


def load_inputs(args) -> tuple[object, list[list[int]], int, str]:
    """(model, token ids, BOS id, description of what was loaded)."""
    import torch

    checkpoint = None if args.random else (args.checkpoint or common.trained_checkpoint())
    if checkpoint is not None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from qid.data import read_texts

        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        texts_file = common.study_file(checkpoint, "data/eval/sotu.parquet")
        if texts_file:
            texts = read_texts(texts_file)[: args.n_texts]
        else:
            texts = common.eval_texts(args.n_texts)
        what = f"checkpoint {checkpoint}"
    else:
        model = common.random_model(args.hidden, args.layers, args.heads, args.vocab, args.context)
        texts = common.eval_texts(args.n_texts)
        tokenizer = common.build_tokenizer(args.vocab) if texts is not None else None
        what = f"random-init GPT-NeoX h{args.hidden}-l{args.layers} vocab {args.vocab}"
    if texts is None or tokenizer is None:
        vocab = model.config.vocab_size
        return model, generated_ids(args.n_texts, vocab, common.SEED), 0, what + ", generated ids"
    token_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return model, token_ids, bos, what + f", {len(texts)} held-out sotu paragraphs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_model_args(p)
    p.add_argument("--n-texts", type=int, default=200)
    p.add_argument("--context", type=int, default=128, help="config evaluate.context")
    p.add_argument("--batch-tokens", type=int, default=2048, help="config evaluate.batch_tokens")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available); fp32 either way")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each side (alternating)")
    args = p.parse_args(argv)

    common.quiet_logs()
    import torch

    torch.set_num_threads(args.threads)
    model, token_ids, bos, what = load_inputs(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n_tokens = sum(len(ids) for ids in token_ids)
    n_windows = sum(-(-len(ids) // (args.context - 1)) for ids in token_ids)
    print(f"machine: {common.machine()}, device {device}, torch threads {args.threads}")
    print(f"model: {what}; attention {model.config._attn_implementation}")
    print(f"texts: {len(token_ids)}, {n_tokens} predicted tokens, {n_windows} windows")

    runs = {
        "qid": lambda ids: qid_nll(model, ids, bos, args.context, args.batch_tokens),
        "naive": lambda ids: naive_nll(model, ids, bos, args.context),
    }
    for run in runs.values():  # warm-up: first-call allocations, kernel selection
        run(token_ids[:8])
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    nll: dict[str, float] = {}
    for r in range(args.repeats):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            start = time.perf_counter()
            nll[name] = runs[name](token_ids)
            sync()
            seconds[name].append(time.perf_counter() - start)

    rate = {name: n_tokens / common.median(s) for name, s in seconds.items()}
    loss = {name: nll[name] / n_tokens for name in runs}
    diff = abs(loss["qid"] - loss["naive"])
    for name in runs:
        print(
            f"{name:>5}: {common.median(seconds[name]):7.2f} s  {rate[name]:9.0f} tokens/s  "
            f"loss {loss[name]:.6f} nats/token"
        )
    print(f"loss difference: {diff:.2e} nats/token (limit {MAX_LOSS_DIFF:g})")
    ratio = rate["qid"] / rate["naive"]
    print(f"eval throughput ratio (qid / naive loop): {ratio:.2f}x (goal >= 3x)")
    if diff > MAX_LOSS_DIFF:
        print(f"FAIL: losses differ by {diff:.2e} > {MAX_LOSS_DIFF:g} nats/token", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
