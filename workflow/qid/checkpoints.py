"""Checkpoints by training: a GPT-NeoX suite from random init, saved at log-spaced steps like
Pythia's revisions (one directory per step), with D and N recorded exactly; and the one check
every command runs on a model directory before loading it (`open_checkpoint`), and the mode of
the files a run writes (`share`).

torch and transformers are imported where used: `open_checkpoint` answers misuse in a second.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zipfile
from pathlib import Path
from typing import NoReturn

import numpy as np

from qid import QidError
from qid.grid import CHECKPOINT_META
from qid.integrity import checkpoint_fingerprint, weight_files
from qid.schedule import schedule_meta, training_lr


def model_config(arch: dict, vocab_size: int, context: int, rotary_pct: float):
    """Pythia's architecture: parallel residual, partial rotary, untied input/output embeddings."""
    from transformers import GPTNeoXConfig

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


def non_embedding_params(model) -> int:
    """N as in Kaplan et al. and the paper: all parameters but the embeddings (token and learned
    position embeddings, every `nn.Embedding`) and the output head, counted once when tied."""
    import torch

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


def batches(ids: np.ndarray, context: int, batch_size: int, steps: int, seed: int):
    """Seeded order over non-overlapping windows; one pass (an epoch) before any window repeats.

    The order depends on the seed only, so every size sees the same tokens at the same step.
    """
    import torch

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
):
    """Train one size, saving a checkpoint at every step of `steps` and the loss per step.

    bitnet: BitNet b1.58 (qid.bitnet) from the same seeded init and batches as the 16-bit model.
    Returns the loss per step (a DataFrame, also written to `log_path`).
    """
    import pandas as pd
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ctx, bs = training["context"], training["batch_size"]
    model = _init_model(arch, training, len(tokenizer), bitnet)
    n_params = non_embedding_params(model)
    ids = np.load(train_ids)
    tokens_per_step = ctx * bs
    total = steps[-1]
    epochs = total * bs / ((ids.size - 1) // ctx)
    optim = _optimizer(model, training)
    bf16 = training.get("precision", "fp32") == "bf16"
    if bf16 and not torch.cpu._is_avx512_bf16_supported():
        tqdm.write(
            "warning: training.precision bf16 on a CPU without AVX512-BF16 may be slower than fp32"
        )
    log, saves = [], set(steps)
    model.train()
    bar = tqdm(
        batches(ids, ctx, bs, total, seed), total=total, desc=f"{suite}/{size}", mininterval=5
    )
    start = time.perf_counter()
    for step, x in enumerate(bar, start=1):
        lr = training_lr(step, training, total)  # qid.schedule: cosine, wsd or constant
        loss = _train_step(model, optim, x, lr, bf16)
        log.append(
            {
                "step": step,
                "tokens": step * tokens_per_step,
                "loss": loss,
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
        )
        bar.set_postfix(loss=f"{loss:.3f}")
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
                    "precision": "bf16" if bf16 else "fp32",
                    **schedule_meta(step, training, total),  # schedule, lr, decay_step
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


def _init_model(arch: dict, training: dict, vocab_size: int, bitnet: bool):
    """A freshly initialised GPT-NeoX (drawn from torch's seeded generator), BitNet if asked."""
    from transformers import GPTNeoXForCausalLM

    from qid.bitnet import to_bitnet

    model = GPTNeoXForCausalLM(
        model_config(arch, vocab_size, training["context"], training.get("rotary_pct", 0.25))
    )
    if bitnet:
        to_bitnet(model)
    return model


def _optimizer(model, training: dict):
    """AdamW with weight decay on the matrices only (not on biases and norms)."""
    import torch

    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": training["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=training["lr"],
        betas=tuple(training["betas"]),
    )


def _labels_loss(model, x):
    """transformers' own next-token loss of batch `x`."""
    return model(input_ids=x, labels=x).loss


def _train_step(model, optim, x, lr: float, bf16: bool = False, loss_fn=_labels_loss) -> float:
    """One optimizer step on batch `x` at learning rate `lr`; the batch's loss. bf16: mixed
    precision (matmuls in bfloat16 under autocast; weights, gradients and AdamW state fp32).
    loss_fn(model, x): the loss to step on (benchmarks/train_throughput.py times another)."""
    import torch

    for group in optim.param_groups:
        group["lr"] = lr
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = loss_fn(model, x)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optim.step()
    return loss.item()


def save(model, tokenizer, path: Path, meta: dict) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {**meta, **checkpoint_fingerprint(path)}  # hashed as written: what later stages read
    (path / CHECKPOINT_META).write_text(json.dumps(meta, indent=2) + "\n")
    share(path)


def read_meta(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / CHECKPOINT_META
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} has no {CHECKPOINT_META}")
    return json.loads(path.read_text())


# A hub repository id (`org/name`): what a user may type for a model the workflow fetches.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def open_checkpoint(path: str | Path, flag: str = "--checkpoint", weights: bool = True) -> Path:
    """The model directory `path` names, checked before any weights load; one line naming
    `flag` and what is wrong else: a path that does not exist, no config.json or no model_type
    in it (transformers' "Unrecognized model"), and unless not `weights`: no weights, or a
    weight file that is truncated or corrupt (with the command that makes it again).

    A hub id (`org/name`) that is no path is read from the local HF cache (offline): a model
    the workflow fetched, or one downloaded by hand. Nothing is downloaded here.
    """
    directory = Path(path)
    if not directory.exists():
        directory = _cached_hub_model(str(path)) or _missing(str(path), flag)
    where = f"{flag} {str(path)!r}"
    if not directory.is_dir():
        raise QidError(f"{where} is not a directory (a model is a directory with config.json)")
    config = _config(directory, where)
    if weights:
        _check_weights(directory, where, flag, quantized="quantization_config" in config)
    return directory


def _check_weights(directory: Path, where: str, flag: str, quantized: bool) -> None:
    files = weight_files(directory)
    if not files:
        raise QidError(f"{where} holds no weights (*.safetensors, *.bin): not a model directory")
    for file in files:
        if problem := weight_problem(file):
            fix = _remedy(directory, file, flag, quantized)
            raise QidError(f"{where}: weight file {str(file)!r} {problem}; {fix}")


def _missing(path: str, flag: str) -> NoReturn:
    hint = ""
    if _HUB_ID.fullmatch(path):
        hint = (
            ", nor is it a hub model in the local HF cache (qid downloads no model: a "
            f"`source: hub` suite fetches hub revisions, or `hf download {path}` by hand)"
        )
    raise QidError(f"{flag} {path!r} does not exist{hint}")


def _cached_hub_model(name: str) -> Path | None:
    """The snapshot directory of hub model `name` in the local HF cache, or None."""
    if not _HUB_ID.fullmatch(name):
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except ValueError:  # huggingface_hub's validation of the id ("a/..")
        return None
    return Path(found).parent if isinstance(found, str) else None


def _config(directory: Path, where: str) -> dict:
    """config.json of a model directory, with a model_type transformers knows."""
    path = directory / "config.json"
    if not path.is_file():
        held = sorted(p.name for p in directory.iterdir())[:6]
        raise QidError(
            f"{where} has no config.json: not a model directory (it holds "
            f"{', '.join(held) + (', ...' if len(held) == 6 else '') or 'nothing'})"
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise QidError(f"{where}: config.json is not valid JSON ({err})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not model_type:
        raise QidError(f"{where}: config.json gives no model_type, so transformers cannot build it")
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise QidError(
            f"{where}: config.json's model_type {model_type!r} is not an architecture this "
            "transformers knows (a newer transformers, or trust_remote_code, may have it)"
        )
    return config


def weight_problem(file: Path) -> str | None:
    """What is wrong with a weight file, read from its header and size (no tensor is read),
    or None: a truncated safetensors file (a killed download or save), a header that is not one,
    a torch zip archive without its end."""
    size = file.stat().st_size
    if file.suffix == ".safetensors":
        with file.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"is truncated ({size} bytes: not even a safetensors header)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"is truncated or not safetensors ({size:,} bytes, header of {n:,} claimed)"
            try:
                header = json.loads(fh.read(n))
                end = max(
                    (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                    default=0,
                )
            except (ValueError, TypeError, KeyError, IndexError):
                return "is not a safetensors file (its header is not valid)"
        if 8 + n + end != size:
            return f"is truncated ({size:,} bytes, its header promises {8 + n + end:,})"
    elif file.suffix == ".bin":
        with file.open("rb") as fh:
            zipped = fh.read(2) == b"PK"  # torch's format since 1.6; older pickles are let be
        if zipped and not zipfile.is_zipfile(file):
            return f"is truncated ({size:,} bytes: its zip archive has no end)"
    return None


def _remedy(directory: Path, file: Path, flag: str, quantized: bool) -> str:
    """What makes a corrupt weight file again, by where the checkpoint came from."""
    if file.is_symlink():  # fetched: a link into the HF cache, or to a `local` suite's run
        return (
            f"it links {str(file.resolve())!r}: replace that file (a hub revision: `hf cache rm` "
            f"it), then delete {str(directory)!r} and rerun snakemake, which fetches it again"
        )
    meta = directory / CHECKPOINT_META
    if quantized or flag == "--quantized":
        return f"delete {str(directory)!r} and rerun snakemake (or the cell's `qid quantize`)"
    if meta.is_file() and "repo" not in read_meta(directory):  # written by `qid train`
        return (
            f"delete {str(directory.parent)!r} (the training run's output) and rerun snakemake, "
            "which trains it again"
        )
    return "save or download the model again"


def share(root: Path) -> None:
    """Give the files and directories under `root` the mode the umask gives a new one (0644 and
    0755 under umask 022, 0664 and 0775 under 002), so that a team can read the results.

    safetensors >= 0.8 writes every file through a temporary file of mode 0600 and renames it
    into place (safetensors#782), so weights saved by transformers, GPTQModel or llm-compressor
    are private to their writer whatever the umask. Links (fetched files in the HF cache, the
    authors' released checkpoints) are left alone.
    """
    umask = current_umask()
    for path in [Path(root), *Path(root).rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod((0o777 if executable else 0o666) & ~umask)


def current_umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting it back."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
