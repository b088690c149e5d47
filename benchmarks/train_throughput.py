"""A training step's time against what the machine's matmuls allow, and two candidate cuts.

For each size of the default study's suite (config/config.yaml, `neox-sotu`: its architectures,
vocabulary 4,096 and training settings, batch 32 x context 128 = 4,096 tokens a step), each from
the same seeded random init on the same batch, on the same torch threads:

- `landed`: `qid.checkpoints._train_step`, the step `qid train` runs (fp32; the loss is
  transformers' own, from `labels`: the full [tokens x vocabulary] logits, then cross-entropy).
- `fused`: the same step with the output head and the cross-entropy fused by torch's
  `F.linear_cross_entropy` (chunked over tokens: the logits never materialise, their gradient is
  taken while a chunk is in cache). Not what qid runs: it changes the trained weights' last bits,
  so every number the README quotes would have to be regenerated. Its loss must equal the
  landed step's to 1e-5 nats on the first batch (exit 1 otherwise).
- `bf16`: the landed step with `training.precision: bf16` (autocast); fast only on CPUs with
  AVX512-BF16 or AMX, which the first line says.
- `floor`: 3 x a bare `torch.matmul` chain over the model's linear weights (head included) on
  the step's tokens: a step's matmuls are its forward's, again for the inputs' gradients and
  again for the weights', at the rate the forward's shapes run (benchmarks/common.matmul_chain).

Steps alternate between the variants (each variant its own model and optimizer), medians of
`--repeats` after two warm-up steps. Per size it prints each variant's ms per step and the landed
step's fraction of the floor; the last line is that fraction over the suite, each size weighted
by its steps' work as the study runs them (the same number of steps each).

    python benchmarks/train_throughput.py
"""

from __future__ import annotations

import argparse
import sys

import common

MAX_LOSS_DIFF = 1e-5  # nats per token, fused against landed on the first batch


def fused_loss(model, x):
    """The loss transformers computes from `labels=x`, with the output head and the
    cross-entropy in one chunked `F.linear_cross_entropy`."""
    import torch
    import torch.nn.functional as F

    hidden = model.base_model(input_ids=x).last_hidden_state
    targets = torch.full_like(x, -100)  # as transformers shifts `labels`: the last one ignored
    targets[:, :-1] = x[:, 1:]
    return F.linear_cross_entropy(
        hidden.flatten(0, 1),
        model.get_output_embeddings().weight,
        targets.flatten(),
        options=torch.nn.LinearCrossEntropyOptions(),
    )


def default_suite() -> tuple[dict, dict, int]:
    """(sizes, training settings, vocabulary) of the default study's trained suite."""
    import yaml

    from qid.grid import trained_suites

    config = yaml.safe_load((common.ROOT / "config" / "config.yaml").read_text())
    suite = config["suites"][trained_suites(config)[0]]
    return suite["sizes"], suite["training"], config["data"]["tokenizer"]["vocab_size"]


def measure(arch: dict, training: dict, vocab: int, repeats: int):
    """(median seconds per step by variant, linear weights, |fused - landed| first loss)."""
    import torch

    from qid.checkpoints import _init_model, _optimizer, _train_step

    shape = (training["batch_size"], training["context"])
    x = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(common.SEED))
    models = {}
    for variant in ("landed", "fused", "bf16"):
        torch.manual_seed(common.SEED)  # the same init for each
        model = _init_model(arch, training, vocab, False).train()
        models[variant] = (model, _optimizer(model, training))
    model = models["landed"][0]
    with torch.no_grad():
        diff = abs(model(input_ids=x, labels=x).loss.item() - fused_loss(model, x).item())
    chain, weights = common.matmul_chain(model, x.numel())
    lr = training["lr"]
    steps = {
        "landed": lambda: _train_step(*models["landed"], x, lr),
        "fused": lambda: _train_step(*models["fused"], x, lr, loss_fn=fused_loss),
        "bf16": lambda: _train_step(*models["bf16"], x, lr, bf16=True),
        "floor": lambda: [chain() for _ in range(3)],
    }
    for step in steps.values():
        step()
        step()  # warm-up: first-call allocations, kernel selection
    seconds = {k: common.median(v) for k, v in common.timed(steps, repeats).items()}
    return seconds, weights, diff


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch threads for every side")
    p.add_argument("--repeats", type=int, default=5, help="timed steps of each variant")
    p.add_argument("--sizes", help="comma-separated size names (default: all of the suite's)")
    args = p.parse_args(argv)

    common.quiet_logs()
    import torch

    torch.set_num_threads(args.threads)
    sizes, training, vocab = default_suite()
    names = args.sizes.split(",") if args.sizes else list(sizes)
    if unknown := [n for n in names if n not in sizes]:
        p.error(f"--sizes: {', '.join(unknown)} not in the default suite ({', '.join(sizes)})")
    bf16_cpu = torch.cpu._is_avx512_bf16_supported()
    tokens = training["batch_size"] * training["context"]
    print(f"machine: {common.machine()}, torch threads {args.threads}, AVX512-BF16 {bf16_cpu}")
    print(f"step: {training['batch_size']} x {training['context']} tokens, vocabulary {vocab}")
    work, floor_total, landed_total, status = 0.0, 0.0, 0.0, 0
    for name in names:
        seconds, weights, diff = measure(sizes[name], training, vocab, args.repeats)
        flops = 6 * weights * tokens
        line = ", ".join(f"{k} {1000 * s:.0f}" for k, s in seconds.items())
        print(
            f"{name}: {weights / 1e6:.2f}M linear weights; ms per step: {line}; "
            f"landed at {flops / seconds['landed'] / 1e9:.1f} GFLOP/s, "
            f"{seconds['floor'] / seconds['landed']:.2f} of the floor; "
            f"fused / landed {seconds['fused'] / seconds['landed']:.2f}x, "
            f"bf16 / landed {seconds['bf16'] / seconds['landed']:.2f}x; "
            f"loss difference fused - landed {diff:.1e}"
        )
        work += flops
        floor_total += seconds["floor"]
        landed_total += seconds["landed"]
        if diff > MAX_LOSS_DIFF:
            print(f"FAIL: {name}: fused loss differs by {diff:.1e}", file=sys.stderr)
            status = 1
    print(
        f"suite: the landed steps at {work / landed_total / 1e9:.1f} GFLOP/s (6 x linear weights "
        f"x tokens); fraction of the matmul floor: {floor_total / landed_total:.2f}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
