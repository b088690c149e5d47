"""Shared fixtures: a tiny GPT-NeoX checkpoint with its own byte-level BPE, made in seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qid.grid import CHECKPOINT_META

ROOT = Path(__file__).resolve().parents[1]

TEXTS = [
    f"Message {i}: the state of the union is {w}, and the congress shall {v} the {n} laws."
    for i, (w, v, n) in enumerate(
        (w, v, n)
        for w in ("strong", "sound", "good", "steady", "fair")
        for v in ("consider", "pass", "review", "amend")
        for n in ("new", "old", "tax", "trade")
    )
]


@pytest.fixture(scope="session")
def tokenizer():
    from qid.data import train_tokenizer

    return train_tokenizer(TEXTS * 3, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer) -> Path:
    import torch
    from transformers import GPTNeoXForCausalLM

    from qid.checkpoints import model_config, non_embedding_params

    torch.manual_seed(0)
    arch = {"hidden_size": 64, "num_layers": 2, "num_heads": 2}
    model = GPTNeoXForCausalLM(model_config(arch, len(tokenizer), 64, 0.25)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "step10"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    meta = {
        "suite": "t",
        "size": "h64-l2",
        "step": 10,
        "tokens": 640,
        "seed": 0,
        "n_params": non_embedding_params(model),
    }
    (path / CHECKPOINT_META).write_text(json.dumps(meta))
    return path


@pytest.fixture
def collapsed_checkpoint(tiny_checkpoint, tmp_path) -> Path:
    """A copy of the tiny checkpoint with one NaN weight: every loss it gives is NaN."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        model.gpt_neox.layers[0].mlp.dense_h_to_4h.weight[0, 0] = float("nan")
    model.save_pretrained(broken)
    return broken


def put_in_hub_cache(cache: Path, repo: str, revision: str, files: Path) -> str:
    """Lay `files` out as the hub's cache does (huggingface_hub's layout: blobs named by hash,
    snapshots/<commit>/ linking to them, refs/<revision> naming the commit); the commit hash."""
    import hashlib

    root = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in files.iterdir() if p.is_file() and p.name != CHECKPOINT_META):
        data = f.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / f.name).symlink_to(Path("../../blobs") / blob.name)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return commit


def snakemake(
    workdir: Path, *args: str, configfile: Path | None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Snakemake on this checkout's Snakefile in `workdir`, as a user runs it (configfile None:
    the embedded default, config/config.yaml of `workdir`)."""
    # PATH without this interpreter's bin/: the workflow must find `qid` by itself.
    path = os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent
    )
    cmd = [
        sys.executable,
        *("-m", "snakemake", "-s", str(ROOT / "Snakefile")),
        *(("--configfile", str(configfile)) if configfile else ()),
        *("--directory", str(workdir), "--cores", "2"),
        *args,
    ]
    env = {**os.environ, "PATH": path, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
