"""Text sources: which keys each source of eval or calibration texts takes, and the readers of
the external ones (Hugging Face datasets, local files, Wikitext's line layout).

`qid.texts` samples and stores texts from these; the config check (`qid.config`) asks
`eval_set_problem` / `calibration_problem` for a one-line complaint naming the key.
"""

from __future__ import annotations

import hashlib
import re
from itertools import islice
from pathlib import Path

import pandas as pd

from qid.data import DataError, read_table

EVAL_SOURCES = ("heldout", "wiki_offline", "hf", "file")
CALIBRATION_SOURCES = ("corpus", "wiki_offline", "hf", "file")
# The keys each source reads (besides `source`); any other key is a mistake worth naming.
SOURCE_KEYS = {
    "heldout": {"min_chars"},
    "wiki_offline": {"min_chars"},
    "corpus": set(),
    "hf": {
        "dataset",
        "name",
        "split",
        "revision",
        "data_files",
        "text_column",
        "id_column",
        "streaming",
        "buffer_size",
        "join",
        "min_chars",
    },
    "file": {"path", "text_column", "id_column", "text_unit", "join", "min_chars"},
}
REQUIRED_KEYS = {"hf": ("dataset",), "file": ("path",)}
# The package corpora keep their historical filter (paragraphs/extracts of >= 200 characters);
# datasets and files only drop empty rows unless told otherwise.
DEFAULT_MIN_CHARS = {"heldout": 200, "wiki_offline": 200, "hf": 1, "file": 1}
DEFAULT_BUFFER = 10_000
# A Wikitext article starts at a top-level heading row " = Title = "; sections (" = = S = = ")
# stay inside it.
WIKITEXT_TITLE = re.compile(r"^ = (?!=)(.*?) = ?$")


def spec_problem(key: str, spec: dict, sources: tuple, context_keys: set) -> str | None:
    """What is wrong with a source spec (one line naming the config key), or None.

    `key` is the spec's config key (e.g. eval_sets.wiki2); `context_keys` are the keys its
    block holds besides the source's own (n_texts, n_samples, ...)."""
    source = spec.get("source", "corpus" if "corpus" in sources else None)
    if source not in sources:
        return f"config key '{key}.source': {source!r} is not one of {', '.join(sources)}"
    allowed = SOURCE_KEYS[source] | context_keys | {"source"}
    for name in spec:
        if name not in allowed:
            return (
                f"config key '{key}.{name}' is not used by source {source!r} "
                f"(its keys: {', '.join(sorted(allowed))})"
            )
    for name in REQUIRED_KEYS.get(source, ()):
        if not spec.get(name):
            return f"config key '{key}': source {source!r} needs '{name}'"
    if "buffer_size" in spec and not spec.get("streaming", True):
        return f"config key '{key}.buffer_size' only applies with streaming: true"
    return None


def eval_set_problem(name: str, spec: dict) -> str | None:
    return spec_problem(f"eval_sets.{name}", spec, EVAL_SOURCES, {"n_texts"})


def calibration_problem(spec: dict) -> str | None:
    # n_texts sizes the pool windows are cut from; `corpus` cuts them from every long document.
    context = {"n_samples", "length"} | (
        {"n_texts"} if spec.get("source", "corpus") != "corpus" else set()
    )
    return spec_problem("data.calibration", spec, CALIBRATION_SOURCES, context)


def needs_corpus_split(spec: dict) -> bool:
    """Whether a spec's source is built from the training corpus's seeded split."""
    return spec.get("source", "corpus") in ("heldout", "corpus")


# --- Hugging Face datasets ----------------------------------------------------------------


def _describe(spec: dict) -> str:
    extras = [
        f"{k} {spec[k]!r}" for k in ("name", "split", "revision", "data_files") if spec.get(k)
    ]
    return f"dataset {spec['dataset']!r}" + (f" ({', '.join(extras)})" if extras else "")


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hf_error(where: str, spec: dict, err: Exception) -> DataError:
    """One line naming the eval set, the dataset and what is missing."""
    import datasets.config

    what, msg = _describe(spec), _one_line(err)
    if isinstance(err, ConnectionError):
        if datasets.config.HF_HUB_OFFLINE:
            return DataError(
                f"{where}: {what} is not in the local Hugging Face cache "
                f"({datasets.config.HF_DATASETS_CACHE}) and offline mode is on "
                "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): build this set once with network "
                "access (the sample is stored), or point HF_HOME at a cache that holds it"
            )
        return DataError(f"{where}: cannot reach {what} on the Hugging Face Hub ({msg})")
    if isinstance(err, ValueError) and "split" in msg.lower():
        return DataError(f"{where}: {what} has no split {spec.get('split', 'train')!r}: {msg}")
    if isinstance(err, ValueError) and "BuilderConfig" in msg:
        return DataError(f"{where}: {what} has no config {spec.get('name')!r}: {msg}")
    if isinstance(err, FileNotFoundError):  # includes DatasetNotFoundError (and revisions)
        return DataError(f"{where}: {what} not found: {msg}")
    return DataError(f"{where}: cannot read {what}: {type(err).__name__}: {msg}")


def _load_hf(where: str, spec: dict):
    """The split as a `datasets` Dataset, or an IterableDataset when streaming."""
    from datasets import load_dataset

    try:
        return load_dataset(
            spec["dataset"],
            spec.get("name"),
            split=spec.get("split", "train"),
            revision=spec.get("revision"),
            data_files=spec.get("data_files"),
            streaming=spec.get("streaming", True),
        )
    except Exception as err:  # the loader raises many types (OSError, ValueError, hub errors)
        raise _hf_error(where, spec, err) from err


def _check_columns(where: str, spec: dict, columns: list[str]) -> None:
    # A stream with unknown features (column_names None) shows a missing column when read.
    for key in ("text_column", "id_column"):
        column = spec.get(key, "text" if key == "text_column" else None)
        if column is not None and column not in columns:
            raise DataError(
                f"{where}: {_describe(spec)} has no column {column!r} "
                f"(set {key}; columns: {', '.join(columns)})"
            )


def _rows(where: str, spec: dict, records) -> list[tuple[str, str]]:
    """(text id, text) of every record; ids from `id_column`, else the row number."""
    text_col, id_col = spec.get("text_column", "text"), spec.get("id_column")
    out = []
    try:
        for i, row in enumerate(records):
            text = row[text_col]
            out.append((str(row[id_col]) if id_col else str(i), text if text else ""))
    except KeyError as err:
        raise DataError(f"{where}: {_describe(spec)} has no column {err.args[0]!r}") from None
    except DataError:
        raise
    except Exception as err:  # a stream fails only when read (network, bad files)
        raise _hf_error(where, spec, err) from err
    return out


def _load_columns(where: str, spec: dict):
    """The split, checked for and narrowed to its text (and id) column where they are known."""
    ds = _load_hf(where, spec)
    if ds.column_names is not None:
        _check_columns(where, spec, ds.column_names)
        ds = ds.select_columns(
            [c for c in (spec.get("text_column", "text"), spec.get("id_column")) if c]
        )
    return ds


def hf_rows(where: str, spec: dict) -> list[tuple[str, str]]:
    """Every row of the split (streamed or from the Arrow cache), unfiltered."""
    return _rows(where, spec, _load_columns(where, spec))


def hf_stream_sample(where: str, spec: dict, n: int, seed: int) -> pd.DataFrame:
    """n texts of a streamed split, drawn with `IterableDataset.shuffle(seed, buffer_size)`.

    This is a buffer shuffle, not a uniform sample: the shard (file) order is shuffled, then rows
    pass through a buffer of `buffer_size` from which each next row is drawn at random. For a
    dataset of many shards (RefinedWeb: ~5,500 parquet files) the texts come from a few random
    shards; for one file, from its first rows mostly, unless buffer_size >= its rows. Texts
    shorter than `min_chars` (after stripping) are dropped before the shuffle. Text ids are
    `id_column`, else a hash of the text (a stream has no stable row number).
    """
    ds = _load_columns(where, spec)
    text_col, min_chars = (
        spec.get("text_column", "text"),
        spec.get("min_chars", DEFAULT_MIN_CHARS["hf"]),
    )
    ds = ds.filter(lambda row: len((row[text_col] or "").strip()) >= min_chars)
    ds = ds.shuffle(seed=seed, buffer_size=spec.get("buffer_size", DEFAULT_BUFFER))
    rows = _rows(where, spec, islice(ds, n))
    if len(rows) < n:
        raise DataError(
            f"{where}: n_texts={n} but {_describe(spec)} has only {len(rows)} texts of "
            f">= {min_chars} characters"
        )
    if not spec.get("id_column"):
        rows = [(hashlib.sha1(t.encode()).hexdigest()[:16], t) for _, t in rows]
    return pd.DataFrame({"text_id": [i for i, _ in rows], "text": [t for _, t in rows]})


# --- local files --------------------------------------------------------------------------


def file_rows(where: str, spec: dict) -> list[tuple[str, str]]:
    """(text id, text) of every record of a parquet / JSON Lines / text file, unfiltered.

    Text files hold one text per line (`text_unit: line`) or per blank-line-separated paragraph
    (`text_unit: paragraph`); ids are line or paragraph numbers. Tables take `text_column`
    (default `text`) and optionally `id_column` (default: the row number)."""
    path = Path(spec["path"])
    if not path.is_file():
        raise DataError(f"{where}: file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text", ".raw", ".md"):
        raw = path.read_text(encoding="utf-8")
        unit = spec.get("text_unit", "line")
        parts = raw.split("\n") if unit == "line" else re.split(r"\n\s*\n", raw)
        return [(str(i), part) for i, part in enumerate(parts)]
    if suffix == ".parquet":
        frame = read_table(path, f"{where}: file")
    elif suffix in (".jsonl", ".json"):
        try:
            frame = pd.read_json(path, lines=suffix == ".jsonl")
        except ValueError as err:
            raise DataError(f"{where}: file {str(path)!r} is not valid JSON: {err}") from None
    else:
        raise DataError(
            f"{where}: file {str(path)!r}: unknown format {suffix!r} (parquet, jsonl, json, txt)"
        )
    for key in ("text_column", "id_column"):
        column = spec.get(key, "text" if key == "text_column" else None)
        if column is not None and column not in frame.columns:
            raise DataError(
                f"{where}: file {str(path)!r} has no column {column!r} "
                f"(set {key}; columns: {', '.join(map(str, frame.columns))})"
            )
    texts = frame[spec.get("text_column", "text")].fillna("").astype(str).tolist()
    ids = frame[spec["id_column"]].astype(str) if spec.get("id_column") else range(len(texts))
    return [(str(i), t) for i, t in zip(ids, texts, strict=True)]


# --- turning rows into texts --------------------------------------------------------------


def wikitext_articles(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Rebuild Wikitext's articles from its line-per-row layout: (title, article text).

    Wikitext-2's splits hold one line per row, headings and blank lines included, so a row is
    a heading, an empty string or one paragraph. The paper evaluates documents (like
    lm-eval's `wikitext` task, which uses the document-level version), and a model's loss on a
    paragraph without its article's context is not what it is trained for, so `join: article`
    regroups rows into articles at each top-level heading " = Title = ". An article's text is
    its rows joined by newlines (the original file's layout), heading included, stripped; rows
    before the first heading form an untitled article if they hold any text."""
    articles: list[tuple[str, str]] = []
    title, lines = "", []

    def flush() -> None:
        text = "\n".join(lines).strip()
        if text:
            articles.append((title, text))

    for _, row in rows:
        line = row.rstrip("\n")
        heading = WIKITEXT_TITLE.match(line)
        if heading:
            flush()
            title, lines = heading.group(1).strip(), [line]
        else:
            lines.append(line)
    flush()
    return articles
