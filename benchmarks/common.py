"""Helpers shared by the benchmarks: the checkout's `qid` on the path, the machine's name, the
eval texts and a model to run them through.

Every benchmark imports this module first, so `python benchmarks/<name>.py` measures the `qid` of
the checkout it sits in (not whichever copy an environment happens to have installed).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "workflow") not in sys.path:
    sys.path.insert(0, str(ROOT / "workflow"))

# Harmless import-time noise of torchao (CUDA-only .so files on a CPU build) and bitsandbytes.
os.environ.setdefault("GPTQMODEL_DISABLE_GIL_WARNING", "1")

SEED = 0


def machine() -> str:
    """CPU model and core count (and the GPU's name when there is one), for the results table."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def checkout_env() -> dict[str, str]:
    """The environment for a subprocess (Snakemake and its `qid` jobs) importing this checkout."""
    path = [str(ROOT / "workflow"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def quiet_logs() -> None:
    import logging

    for name in ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu.ops"):
        logging.getLogger(name).setLevel(logging.ERROR)


def trained_checkpoint(results: Path = ROOT / "results") -> Path | None:
    """The largest trained checkpoint (most non-embedding parameters, then latest step), if any."""
    from qid.grid import CHECKPOINT_META

    best, key = None, None
    for meta in results.glob(f"*/checkpoints/*/step*/{CHECKPOINT_META}"):
        info = json.loads(meta.read_text())
        k = (info.get("n_params", 0), info.get("step", 0))
        if key is None or k > key:
            best, key = meta.parent, k
    return best


def study_file(checkpoint: Path, relative: str) -> Path | None:
    """A file of the study a checkpoint belongs to (results/{suite}/checkpoints/{size}/step{N})."""
    parents = Path(checkpoint).resolve().parents
    path = parents[3] / relative if len(parents) > 3 else None
    return path if path is not None and path.is_file() else None


def sotu_split(seed: int = SEED, heldout_fraction: float = 0.1):
    """(train documents, held-out documents) exactly as `qid data` splits them."""
    from qid.data import load_sotu, split_documents

    return split_documents(load_sotu(), heldout_fraction, seed)


def eval_texts(n_texts: int, seed: int = SEED) -> list[str] | None:
    """The default study's in-domain eval set (held-out sotu paragraphs), or None without sotu."""
    from qid.data import DataError, paragraphs, sample_texts

    try:
        _, heldout = sotu_split(seed)
    except DataError:
        return None
    return sample_texts(paragraphs(heldout, 200), n_texts, seed, "sotu")["text"].tolist()


def build_tokenizer(vocab_size: int, seed: int = SEED):
    """The default study's byte-level BPE, trained on the sotu training split (~2 s)."""
    from qid.data import train_tokenizer

    train, _ = sotu_split(seed)
    return train_tokenizer([text for _, text in train], vocab_size)


def random_model(hidden: int, layers: int, heads: int, vocab: int, context: int, seed: int = SEED):
    """A seeded random-init GPT-NeoX of the embedded suite's architecture, in eval mode."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from qid.checkpoints import model_config

    torch.manual_seed(seed)
    arch = {"hidden_size": hidden, "num_layers": layers, "num_heads": heads}
    return GPTNeoXForCausalLM(model_config(arch, vocab, context, 0.25)).eval()


def save_checkpoint(model, tokenizer, path: Path, step: int = 1) -> Path:
    """Save like `qid train` does: weights, tokenizer and the qid metadata file."""
    from qid.checkpoints import non_embedding_params
    from qid.grid import CHECKPOINT_META

    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {
        "suite": "bench",
        "size": "bench",
        "step": step,
        "tokens": 0,
        "seed": SEED,
        "n_params": non_embedding_params(model),
    }
    (path / CHECKPOINT_META).write_text(json.dumps(meta))
    return path


def median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def timed(runs: dict, repeats: int, sync=lambda: None) -> dict[str, list[float]]:
    """Seconds of each run per repeat, the order alternating (after r runs, r-th reversed)."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(repeats):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            start = time.perf_counter()
            runs[name]()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def matmul_chain(model, tokens: int):
    """(forward, matmul weights): a bare matmul per linear map of `model`, on `tokens` rows."""
    import torch

    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    w0 = weights[0]
    inputs = {
        n: torch.randn(tokens, n, dtype=w0.dtype, device=w0.device)
        for n in {w.shape[1] for w in weights}
    }

    @torch.inference_mode()
    def forward() -> None:
        for w in weights:  # x @ W^T, as nn.Linear multiplies (bias left out)
            torch.matmul(inputs[w.shape[1]], w.T)

    return forward, sum(w.numel() for w in weights)


def add_model_args(p) -> None:
    """The options every CPU benchmark shares: which model, or the shape of a random one."""
    p.add_argument("--checkpoint", type=Path, help="default: the largest one under results/")
    p.add_argument("--random", action="store_true", help="random init even if results/ has one")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=4096)
