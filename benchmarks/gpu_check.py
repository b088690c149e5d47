"""The two Python steps of `benchmarks/gpu_check.sh`: build its inputs, then report its figures.

    python benchmarks/gpu_check.py prepare DIR [--shape 1b|160m|tiny]   # model, texts under DIR
    python benchmarks/gpu_check.py report DIR             # DIR's results -> summary, JSON

`prepare` saves a seeded random-init GPT-NeoX of Pythia-1b's shape (hidden 2,048, 16 layers,
8 heads, vocabulary 50,304; `--shape 160m`: Pythia-160m's; `--shape tiny`: hidden 64, 2 layers,
vocabulary 512) in fp32 as `qid train`
saves a checkpoint (weights, tokenizer, qid metadata), with a byte-level BPE trained on generated
text (the device machine has no corpus package and no network) and two texts parquets:
calibration (GPTQ) and eval. The texts are generated pseudo-words: a random-init model's loss
does not depend on what they say, and the timings depend only on their token counts.

`report` reads what the shell script's steps left in DIR (steps.tsv: name, exit status,
seconds; throughput.json; the cell's record and eval JSON; the 16-bit eval JSON) and prints one
line per figure, the last the summary; with $OUT set it writes $OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import common

SHAPES = {  # (hidden, layers, heads, vocabulary, tokenizer vocabulary)
    "1b": (2048, 16, 8, 50304, 4096),
    "160m": (768, 12, 12, 50304, 4096),
    "tiny": (64, 2, 2, 512, 400),
}
# Texts, ~300 and ~100 words each. qid's GPTQ runs on CPU, and its time is mostly the calibration
# tokens' forwards and Hessians (a profile at 160m): 16 x ~330 tokens (GPTQModel recommends more)
# and 8 eval texts (~2.6k tokens) keep a 1b cell near 2-3 minutes on 16 cores (an estimate).
N_CALIBRATION, N_EVAL = 16, 8


def generated_texts(n: int, words: int, seed: int) -> list[str]:
    """Pseudo-words of 2-9 letters with a Zipf-like frequency, `words` per text on average."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkqjxz"))
    lexicon = ["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(3000)]
    p = 1.0 / np.arange(1, len(lexicon) + 1)
    p /= p.sum()
    sizes = rng.integers(words // 2, 3 * words // 2, size=n)
    return [" ".join(rng.choice(lexicon, size=k, p=p)) + "." for k in sizes]


def prepare(root: Path, shape: str) -> None:
    import pandas as pd
    import torch
    from transformers import GPTNeoXForCausalLM

    from qid.checkpoints import model_config
    from qid.data import train_tokenizer

    hidden, layers, heads, vocab, tok_vocab = SHAPES[shape]
    calibration = generated_texts(N_CALIBRATION, 300, common.SEED)
    evaluation = generated_texts(N_EVAL, 100, common.SEED + 1)
    tokenizer = train_tokenizer(calibration, tok_vocab)
    arch = {"hidden_size": hidden, "num_layers": layers, "num_heads": heads}
    torch.manual_seed(common.SEED)
    # Random init on the GPU when there is one (seconds instead of ~a minute for 1b on CPU).
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = GPTNeoXForCausalLM(model_config(arch, vocab, 2048, 0.25))
    model = model.float().cpu().eval()
    common.save_checkpoint(model, tokenizer, root / "model")
    for name, texts in (("calibration", calibration), ("eval", evaluation)):
        pd.DataFrame({"text": texts}).to_parquet(root / f"{name}.parquet")
    n = sum(p.numel() for p in model.parameters())
    print(f"prepared {root / 'model'}: {n / 1e6:.1f}M parameters, h{hidden}-l{layers} v{vocab}")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_steps(path: Path) -> dict[str, dict]:
    steps = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, rc, seconds = line.split("\t")[:3]
            steps[name] = {"rc": int(rc), "seconds": float(seconds)}
    return steps


def figures(root: Path) -> dict:
    """Everything the run measured, by step; a missing file leaves its figures None."""
    steps = read_steps(root / "steps.tsv")
    throughput = read_json(root / "throughput.json")
    record = read_json(root / "record.json")
    cell = read_json(root / "eval_gptq.json")
    base = read_json(root / "eval_base.json")
    if throughput:
        last, peak = throughput["sizes"][-1], throughput["peak_tflops"]
        throughput["fraction_of_peak"] = last["flops_with_head"] / (peak * 1e12) if peak else None
    out: dict = {"machine": common.machine(), "steps": steps, "throughput": throughput}
    out["cell"] = {
        "method": "gptq",
        "bits": 4,
        "quantize_s": record.get("seconds") if record else None,
        "evaluate_s": cell.get("seconds") if cell else None,
        "process_s": steps.get("cell", {}).get("seconds"),
        "loss": cell.get("loss") if cell else None,
        "eval_tokens": cell.get("model_tokens") if cell else None,
        "base_loss": base.get("loss") if base else None,
        "base_evaluate_s": base.get("seconds") if base else None,
        "qid": cell["loss"] - base["loss"] if cell and base else None,
    }
    return out


def summary(res: dict) -> list[str]:
    """The report's lines: each step's status and seconds, throughput, the cell's figures."""
    lines = [f"machine: {res['machine']}"]
    for name, step in res["steps"].items():
        status = {0: "ok", 124: "TIMEOUT", 137: "KILLED"}.get(step["rc"], f"exit {step['rc']}")
        lines.append(f"step {name}: {status}, {step['seconds']:.1f} s")
    t = res["throughput"]
    if t:
        last, frac = t["sizes"][-1], t["fraction_of_peak"]
        lines.append(
            f"throughput: {t['device']}, {last['size']} shapes, context {t['context']}: "
            f"{last['tokens_per_s']:,.0f} tokens/s, "
            + (f"{frac:.1%} of peak ({t['peak_tflops']:g} TFLOP/s)" if frac else "peak n/a")
        )
    c = res["cell"]

    def s(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f} s"

    qid = "n/a" if c["qid"] is None else f"{c['qid']:.4f} nats"
    lines.append(
        f"gptq 4-bit cell: quantize {s(c['quantize_s'])}, evaluate {s(c['evaluate_s'])} "
        f"({c['eval_tokens']} tokens), process {s(c['process_s'])}; QiD {qid}"
    )
    return lines


def report(root: Path) -> int:
    """Print the summary, write $OUT/gpu_check.json; 1 if a step failed or none ran."""
    res = figures(root)
    for line in summary(res):
        print(line)
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu_check.json"
        path.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {path}")
    return 0 if res["steps"] and all(s["rc"] == 0 for s in res["steps"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["prepare", "report"])
    p.add_argument("dir", type=Path)
    p.add_argument("--shape", choices=list(SHAPES), default="1b", help="tiny: a code-path check")
    args = p.parse_args(argv)
    common.quiet_logs()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.what == "prepare":
        prepare(args.dir, args.shape)
        return 0
    return report(args.dir)


if __name__ == "__main__":
    sys.exit(main())
