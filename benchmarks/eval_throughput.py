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

Against the machine: a third side, a bare chain of `torch.matmul` over the model's own weight
tensors (every `nn.Linear`: per layer QKV, attention out, MLP up and down, then the output head),
on inputs of the evaluator's tokens per forward (`--batch-tokens` rounded down to whole windows),
same dtype, device and torch threads, as many forwards as it takes to cover the evaluator's
tokens. Both sides are counted alike, 2 x (weights of those linear maps) x tokens: the evaluator's
tokens are those it feeds the model (window tokens, BOS and the one-token overlaps included,
padding not), so padding is its loss; attention's score/value products, layer norms, biases and
the cross-entropy are done by the evaluator but counted on neither side, so the fraction
understates it slightly. The last line is the evaluator's FLOP/s as a fraction of the chain's
(goal >= 0.8): how close the evaluator gets to what the machine's matmuls do on these shapes.

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


def fed_tokens(token_ids: list[list[int]], bos: int, context: int) -> int:
    """Tokens the evaluator feeds the model: every window's length (padding not counted)."""
    from qid.evaluate import windows

    return sum(len(w) for ids in token_ids for w in windows(ids, bos, context))


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
    p.add_argument("--threads", type=int, default=1, help="torch threads for all sides")
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
    fed = fed_tokens(token_ids, bos, args.context)
    rows = max(1, args.batch_tokens // args.context)
    chain, chain_params = common.matmul_chain(model, rows * args.context)
    n_chain = -(-fed // (rows * args.context))  # forwards covering the evaluator's tokens
    print(f"machine: {common.machine()}, device {device}, torch threads {args.threads}")
    print(f"model: {what}; attention {model.config._attn_implementation}")
    print(f"texts: {len(token_ids)}, {n_tokens} predicted tokens, {n_windows} windows")
    print(
        f"matmul chain: {chain_params / 1e6:.2f}M weights in linear maps (head included), "
        f"{rows * args.context} tokens per forward x {n_chain}; the evaluator feeds {fed} tokens"
    )

    nll: dict[str, float] = {}

    def run_qid(ids=token_ids) -> None:
        nll["qid"] = qid_nll(model, ids, bos, args.context, args.batch_tokens)

    def run_naive(ids=token_ids) -> None:
        nll["naive"] = naive_nll(model, ids, bos, args.context)

    def run_chain(n=n_chain) -> None:
        for _ in range(n):
            chain()

    runs = {"qid": run_qid, "naive": run_naive, "chain": run_chain}
    for warm_up in (lambda: run_qid(token_ids[:8]), lambda: run_naive(token_ids[:8]), chain):
        warm_up()  # first-call allocations, kernel selection
    sync()
    seconds = common.timed(runs, args.repeats, sync)

    rate = {name: n_tokens / common.median(s) for name, s in seconds.items() if name != "chain"}
    loss = {name: nll[name] / n_tokens for name in rate}
    diff = abs(loss["qid"] - loss["naive"])
    for name in rate:
        print(
            f"{name:>5}: {common.median(seconds[name]):7.2f} s  {rate[name]:9.0f} tokens/s  "
            f"loss {loss[name]:.6f} nats/token"
        )
    chain_work = 2 * chain_params * n_chain * rows * args.context  # FLOP per chain run
    flops_qid = 2 * chain_params * fed / common.median(seconds["qid"])
    flops_chain = chain_work / common.median(seconds["chain"])
    # The fastest runs too: on a shared machine they are the least disturbed.
    best = 2 * chain_params * fed / min(seconds["qid"]) / (chain_work / min(seconds["chain"]))
    print(
        f"chain: {common.median(seconds['chain']):7.2f} s  {flops_chain / 1e9:.1f} GFLOP/s; "
        f"evaluator {flops_qid / 1e9:.1f} GFLOP/s (2 x linear weights x tokens, both sides); "
        f"fraction of the fastest runs {best:.2f}"
    )
    print(f"loss difference: {diff:.2e} nats/token (limit {MAX_LOSS_DIFF:g})")
    ratio = rate["qid"] / rate["naive"]
    print(f"eval throughput ratio (qid / naive loop): {ratio:.2f}x (goal >= 3x)")
    print(f"evaluator FLOP/s / matmul chain FLOP/s: {flops_qid / flops_chain:.2f} (goal >= 0.8)")
    if diff > MAX_LOSS_DIFF:
        print(f"FAIL: losses differ by {diff:.2e} > {MAX_LOSS_DIFF:g} nats/token", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
