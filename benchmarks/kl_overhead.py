"""The evaluator's time with and without the KL from the 16-bit model (qid.divergence).

Compared on one model, the same token ids, windows and batch size: `qid.evaluate.score` as it
runs without a reference (the loss alone), as the 16-bit model's evaluation that keeps its top-k
(`keep=TopK()`), and as a cell's evaluation against that top-k (`reference=`). The cell's model is
the same model (the KL is then 0, which costs what any KL costs). Order alternates; medians.

    python benchmarks/kl_overhead.py                      # CPU, the default study's largest shape
    python benchmarks/kl_overhead.py --device cuda --hidden 768 --layers 12 --heads 12 \\
        --vocab 50304 --context 2048 --texts 64 --length 2000 --batch-tokens auto
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (this checkout's qid first on the path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--texts", type=int, default=200)
    p.add_argument("--length", type=int, default=130, help="tokens per text")
    p.add_argument("--batch-tokens", default="2048")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    import numpy as np
    import torch

    from qid.divergence import TopK
    from qid.evaluate import Encoded, score

    torch.set_num_threads(args.threads)
    model = common.random_model(args.hidden, args.layers, args.heads, args.vocab, args.context)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = model.to(args.device, dtype)
    rng = np.random.default_rng(common.SEED)
    ids = [rng.integers(1, args.vocab, args.length).tolist() for _ in range(args.texts)]
    encoded = Encoded(ids, 0, args.texts * args.length, args.texts * args.length * 4)
    batch = args.batch_tokens if args.batch_tokens == "auto" else int(args.batch_tokens)

    def timed(**kw) -> tuple[float, dict]:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = score(model, encoded, args.context, batch, **kw)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    reference = TopK()
    timed(keep=reference)  # warm-up, and the top-k the cell side reads
    times: dict[str, list[float]] = {"loss only": [], "16-bit + top-k": [], "cell + KL": []}
    for r in range(args.repeats):
        order = list(times) if r % 2 == 0 else list(reversed(times))
        for name in order:
            kw = {"16-bit + top-k": {"keep": TopK()}, "cell + KL": {"reference": reference}}
            seconds, out = timed(**kw.get(name, {}))
            times[name].append(seconds)
    assert out["loss"] > 0
    tokens = args.texts * args.length
    base = common.median(times["loss only"])
    print(f"{common.machine()}; {tokens} tokens, context {args.context}, vocab {args.vocab}")
    print(f"top-k cache: {reference.nbytes / tokens:.0f} bytes/token, {reference.nbytes:,} in all")
    for name, values in times.items():
        m = common.median(values)
        print(f"{name}: {m:.3f} s ({tokens / m:,.0f} tokens/s), {m / base:.2f}x loss only")
    worst = max(common.median(v) for v in times.values()) / base
    print(f"ratio (slowest with KL / loss only): {worst:.2f}")


if __name__ == "__main__":
    main()
