"""The evaluator's tokens per second on a GPU, as a fraction of the GPU's peak bf16 FLOP/s.

Runs `qid.evaluate.text_nll` (the evaluator's scoring loop: windows batched by length under
`torch.inference_mode`) on random-init GPT-NeoX models of Pythia's shapes (160m: hidden 768,
12 layers, 12 heads; 1b: hidden 2048, 16 layers, 8 heads; vocabulary 50,304; context 2,048), in
bf16 with SDPA attention, on random token sequences of one full window each. The batch (tokens
per forward) is sized from the free GPU memory (`torch.cuda.mem_get_info`): the logits dominate
inference memory, at about 10 bytes per token per vocabulary entry (bf16 logits, their fp32 copy,
the fp32 log-softmax inside the cross-entropy).

Achieved FLOP/s = 2 * N * tokens/s, the usual forward cost of a dense decoder, with N the
non-embedding parameter count (`qid.checkpoints.non_embedding_params`, the paper's N: 85,056,000
for Pythia-160m). That leaves out the output head's matmul (hidden x vocabulary per token: 45%
of N at 160m, 13% at 1b) and attention's context-dependent FLOPs, so the fraction is also printed
with the head counted (N + head), the fairer measure of the GPU's work. Weights are random: the
time of a forward does not depend on their values.

Peak dense bf16 FLOP/s by `torch.cuda.get_device_name()` (NVIDIA's datasheets, without
sparsity): H100 SXM ("NVIDIA H100 80GB HBM3") and H200 ("NVIDIA H200") 989 TFLOP/s, H100 NVL and
H200 NVL 835, H100 PCIe ("NVIDIA H100 PCIe") 756, A100 312; `--peak-tflops` for another. Beside
the datasheet it also times a bare square matmul (`--matmul-size`, 8,192 on a GPU: what the chip
reaches in practice, ~790 TFLOP/s on an H100 SXM or H200 at this workplace) and prints the
fraction of that. The last line: the largest size's tokens/s and its fraction of the datasheet
peak counting the head (goal >= 0.5 on Pythia-1b shapes at context 2048). `--json PATH` also
writes the figures as JSON. Without a GPU it prints that nothing was measured and exits 0;
`--device cpu --sizes tiny` runs every code path on tiny shapes (no peak: fraction n/a).

    python benchmarks/gpu_throughput.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common

SIZES = {  # Pythia's shapes (hidden, layers, heads); "tiny" only exercises the code
    "160m": (768, 12, 12),
    "1b": (2048, 16, 8),
    "tiny": (64, 2, 2),
}
VOCAB = 50304
PEAK_TFLOPS = [  # dense bf16, first match on the device name wins (so NVL/PCIe come first)
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),  # SXM: "NVIDIA H100 80GB HBM3"
    ("H200", 989.0),  # "NVIDIA H200", also GH200
    ("A100", 312.0),
]
BYTES_PER_LOGIT = 10  # bf16 logits (2) + their fp32 copy (4) + fp32 log-softmax (4)


def peak_tflops(name: str) -> float | None:
    for key, peak in PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def matmul_tflops(device: str, dtype, n: int, repeats: int = 10) -> float:
    """TFLOP/s of a bare n x n x n matmul (random data, 3 warm-ups, mean of `repeats`)."""
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def batch_tokens_for(free_bytes: int, vocab: int, hidden: int, context: int, share: float) -> int:
    """Tokens per forward that fit in `share` of the free memory, a whole number of windows."""
    per_token = BYTES_PER_LOGIT * vocab + 64 * hidden  # logits, plus activations (generous)
    rows = max(1, int(share * free_bytes / per_token) // context)
    return rows * context


def build(size: str, device: str, dtype, context: int):
    import torch
    from transformers import GPTNeoXForCausalLM

    from qid.checkpoints import model_config

    hidden, layers, heads = SIZES[size]
    config = model_config(
        {"hidden_size": hidden, "num_layers": layers, "num_heads": heads}, VOCAB, context, 0.25
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(common.SEED)
    with torch.device(device):
        model = GPTNeoXForCausalLM(config)
    return model.to(dtype).eval()


def measure(args, size: str, device: str, dtype) -> dict:
    import torch

    from qid.checkpoints import non_embedding_params
    from qid.evaluate import text_nll

    cuda = device.startswith("cuda")
    model = build(size, device, dtype, args.context)
    n_params = non_embedding_params(model)
    head = sum(p.numel() for p in model.get_output_embeddings().parameters())
    hidden = model.config.hidden_size
    if args.batch_tokens:
        batch_tokens = args.batch_tokens
    elif cuda:
        free, _ = torch.cuda.mem_get_info()
        batch_tokens = batch_tokens_for(free, VOCAB, hidden, args.context, args.memory_share)
    else:
        batch_tokens = 4 * args.context
    rows = batch_tokens // args.context
    gen = torch.Generator().manual_seed(common.SEED)
    # One window per text: BOS + context - 1 tokens. A few batches per timed pass.
    n_texts = max(rows * args.batches, 1)
    texts = torch.randint(1, VOCAB, (n_texts, args.context - 1), generator=gen).tolist()
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    text_nll(model, texts[:rows], 0, args.context, batch_tokens)  # warm-up: kernels, allocator
    sync()
    tokens, start = 0, time.perf_counter()
    while True:
        nll = text_nll(model, texts, 0, args.context, batch_tokens)
        sync()
        tokens += n_texts * (args.context - 1)
        elapsed = time.perf_counter() - start
        if elapsed >= args.seconds:
            break
    if not (nll > 0).all():
        raise RuntimeError(f"{size}: non-positive NLL, the forward is broken")
    rate = tokens / elapsed
    peak_mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    del model
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return {
        "size": size,
        "n_params": n_params,
        "head": head,
        "batch_tokens": batch_tokens,
        "tokens_per_s": rate,
        "flops": 2 * n_params * rate,
        "flops_with_head": 2 * (n_params + head) * rate,
        "peak_mem_gib": peak_mem,
    }


def fraction(flops: float, tflops: float | None) -> str:
    return f"{flops / (tflops * 1e12):.1%}" if tflops else "n/a"


def report(r: dict, peak: float | None, matmul: float | None) -> str:
    """One size's line: tokens/s, FLOP/s as 2N and with the head, fractions of both peaks."""
    return (
        f"{r['size']:>5}: N {r['n_params'] / 1e6:.1f}M (+ head {r['head'] / 1e6:.1f}M), "
        f"batch {r['batch_tokens']} tokens, {r['tokens_per_s']:,.0f} tokens/s, "
        f"{r['flops'] / 1e12:.1f} TFLOP/s = {fraction(r['flops'], peak)} of peak "
        f"({r['flops_with_head'] / 1e12:.1f} TFLOP/s = {fraction(r['flops_with_head'], peak)} "
        f"counting the head, {fraction(r['flops_with_head'], matmul)} of the bare matmul), "
        f"peak memory {r['peak_mem_gib']:.1f} GiB"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["160m", "1b"], choices=list(SIZES))
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--batch-tokens", type=int, help="default: from free GPU memory")
    p.add_argument("--memory-share", type=float, default=0.5, help="of free memory for a batch")
    p.add_argument("--batches", type=int, default=4, help="batches per timed pass")
    p.add_argument("--seconds", type=float, default=10.0, help="minimum timed seconds per size")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--peak-tflops", type=float, help="the device's peak (default: by name)")
    p.add_argument("--matmul-size", type=int, help="bare matmul n (default 8192 GPU, 256 CPU)")
    p.add_argument("--device", help="default cuda; cpu only checks the code path")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    common.quiet_logs()
    import torch

    device = args.device or "cuda"
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"machine: {common.machine()}")
        print("no GPU available: not measured")
        return 0
    name = torch.cuda.get_device_name() if cuda else common.machine()
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # only --dtype float32 uses it
    dtype = getattr(torch, args.dtype)
    matmul_n = args.matmul_size or (8192 if cuda else 256)
    matmul = matmul_tflops(device, dtype, matmul_n)
    print(f"device: {name}; peak {peak or 'unknown'} TFLOP/s ({args.dtype} dense, datasheet)")
    print(
        f"bare {matmul_n}^3 matmul: {matmul:.1f} TFLOP/s = {fraction(matmul * 1e12, peak)} of peak"
    )
    print(f"torch {torch.__version__}, context {args.context}, attention sdpa, {args.dtype}")
    results = []
    for size in args.sizes:
        results.append(measure(args, size, device, dtype))
        print(report(results[-1], peak, matmul))
    if args.json:
        figures = {"device": name, "peak_tflops": peak, "matmul_tflops": matmul}
        sizes = [{k: None if v != v else v for k, v in r.items()} for r in results]  # NaN: None
        args.json.write_text(json.dumps({**figures, "context": args.context, "sizes": sizes}))
    last = results[-1]
    print(
        f"gpu eval throughput, {last['size']} shapes, context {args.context}: "
        f"{last['tokens_per_s']:,.0f} tokens/s = {fraction(last['flops_with_head'], peak)} of "
        f"{args.dtype} dense peak counting the head ({fraction(last['flops'], peak)} as 2N; "
        f"{fraction(last['flops_with_head'], matmul)} of the bare matmul) (goal >= 50%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
