"""Eval-set and calibration sources through the real loading code, offline: a local parquet
stands in for RefinedWeb (the `datasets` streaming path a hub dataset takes, and the `file`
path), a tiny Wikitext-layout table for Wikitext-2, an empty cache for a dataset not there."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from qid.cli import main
from qid.data import DataError, read_texts, sample_texts
from qid.sources import wikitext_articles
from qid.texts import build_calibration, build_eval_set, select_texts

ROOT = Path(__file__).resolve().parents[1]
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def web_text(i: int) -> str:
    """A document of 2-7 pseudo-random sentences; every 10th row is empty, every 7th short."""
    if i % 10 == 0:
        return ""
    if i % 7 == 0:
        return "short"
    n = 2 + (i * 7919) % 6
    return " ".join(f"Doc {i} says {WORDS[(i + k) % 12]} {WORDS[(i * k) % 12]}." for k in range(n))


@pytest.fixture
def refinedweb(tmp_path) -> Path:
    """A RefinedWeb-shaped table: `content` (the text) and `url`."""
    path = tmp_path / "refinedweb.parquet"
    rows = range(400)
    pd.DataFrame(
        {"content": [web_text(i) for i in rows], "url": [f"u{i}" for i in rows]}
    ).to_parquet(path)
    return path


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """Keep `datasets`' Arrow cache (non-streaming loads) out of the user's home, and skip the
    5 s `datasets` sleeps after a shuffled parquet stream (to let pyarrow's threads close)."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0, raising=False)


def hf(path: Path, **extra) -> dict:
    """An `hf` spec reading a local parquet through `datasets`, as a hub dataset would be."""
    spec = {"source": "hf", "dataset": "parquet", "data_files": str(path), "split": "train"}
    return {**spec, "text_column": "content", **extra}


def expected(path: Path, n: int, seed: int, min_chars: int) -> pd.DataFrame:
    """The exact sample, computed from the table with pandas alone."""
    texts = pd.read_parquet(path)["content"].tolist()
    kept = [(str(i), t) for i, t in enumerate(texts) if len(t.strip()) >= min_chars]
    return sample_texts(kept, n, seed, "x")


def test_streamed_sample_is_seeded_filtered_and_stored(refinedweb, tmp_path):
    out = tmp_path / "eval" / "rw.parquet"
    spec = hf(refinedweb, n_texts=30, min_chars=20, buffer_size=100)
    summary = build_eval_set("rw", spec, seed=0, out=out)
    stored = pd.read_parquet(out)
    assert summary["texts"] == len(stored) == 30 and list(stored.columns) == ["text_id", "text"]
    source = set(pd.read_parquet(refinedweb)["content"])
    assert set(stored.text) <= source and stored.text.str.len().min() >= 20
    assert stored.text.is_unique and stored.text_id.is_unique
    assert read_texts(out) == stored.text.tolist()
    again = select_texts("x", spec, 30, seed=0)
    assert again.equals(stored)
    assert set(select_texts("x", spec, 30, seed=1).text) != set(stored.text)


def test_streamed_sample_takes_ids_from_a_column(refinedweb):
    frame = select_texts("x", hf(refinedweb, id_column="url"), 5, seed=0)
    table = pd.read_parquet(refinedweb).set_index("url")
    assert [table.content[u] for u in frame.text_id] == frame.text.tolist()


def test_exact_sample_through_datasets_and_file_agree(refinedweb):
    want = expected(refinedweb, 25, seed=3, min_chars=20)
    via_datasets = select_texts("x", hf(refinedweb, streaming=False, min_chars=20), 25, seed=3)
    file_spec = {"source": "file", "path": str(refinedweb), "text_column": "content"}
    via_file = select_texts("x", {**file_spec, "min_chars": 20}, 25, seed=3)
    assert via_datasets.equals(want) and via_file.equals(want)
    assert not select_texts("x", {**file_spec, "min_chars": 20}, 25, seed=4).equals(want)


def test_jsonl_and_text_files(tmp_path):
    texts = [web_text(i) for i in range(1, 40) if web_text(i) != "short"]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"body": t, "id": f"d{i}"}) + "\n" for i, t in enumerate(texts))
    )
    frame = select_texts(
        "x", {"source": "file", "path": str(jsonl), "text_column": "body", "id_column": "id"}, 10, 0
    )
    assert all(texts[int(i[1:])] == t for i, t in zip(frame.text_id, frame.text, strict=True))

    lines = tmp_path / "lines.txt"
    lines.write_text("first text\n\nsecond text\nthird text\n")
    got = select_texts("x", {"source": "file", "path": str(lines)}, "all", 0)
    assert got.text.tolist() == ["first text", "second text", "third text"]
    paras = {"source": "file", "path": str(lines), "text_unit": "paragraph"}
    assert select_texts("x", paras, "all", 0).text.tolist() == [
        "first text",
        "second text\nthird text\n",
    ]


WIKITEXT = [
    "",
    " = Robert Boulter = \n",
    "",
    " Robert Boulter is an English actor . \n",
    " = = Career = = \n",
    "",
    " In 2000 Boulter had a guest role . \n",
    "",
    " = Du Fu = \n",
    "",
    " Du Fu was a Chinese poet . \n",
    " = = Life = = \n",
    " He was born in 712 . \n",
    " = Kiss You = \n",
    " Kiss You is a song . \n",
]


def test_wikitext_lines_regroup_into_articles():
    rows = [(str(i), r) for i, r in enumerate(WIKITEXT)]
    articles = wikitext_articles(rows)
    assert [t for t, _ in articles] == ["Robert Boulter", "Du Fu", "Kiss You"]
    boulter = articles[0][1]
    assert boulter.startswith("= Robert Boulter =") and " = = Career = = " in boulter
    assert "guest role" in boulter and "Du Fu" not in boulter
    assert "\n\n" in boulter  # the blank rows between paragraphs survive


@pytest.mark.parametrize("streaming", [True, False])
def test_wikitext_split_through_datasets_gives_articles(tmp_path, streaming):
    path = tmp_path / "wikitext-test.parquet"
    pd.DataFrame({"text": WIKITEXT}).to_parquet(path)
    spec = {"source": "hf", "dataset": "parquet", "data_files": str(path), "streaming": streaming}
    rows = select_texts("x", spec, "all", seed=0)
    assert len(rows) == sum(1 for r in WIKITEXT if r.strip())  # a text per non-empty line
    articles = select_texts("x", {**spec, "join": "article"}, "all", seed=0)
    assert articles.text_id.tolist() == ["Robert Boulter", "Du Fu", "Kiss You"]
    two = select_texts("x", {**spec, "join": "article"}, 2, seed=0)
    assert set(two.text) < set(articles.text)


def test_missing_column_file_and_split_are_named(refinedweb, tmp_path):
    with pytest.raises(
        DataError, match=r"eval set 'rw'.*'parquet'.*no column 'text'.*content, url"
    ):
        build_eval_set(
            "rw", {**hf(refinedweb, n_texts=3), "text_column": "text"}, 0, tmp_path / "o.parquet"
        )
    with pytest.raises(DataError, match=r"eval set 'rw'.*no column 'body'"):
        select_texts("eval set 'rw'", hf(refinedweb, streaming=False, text_column="body"), 3, 0)
    spec = {"source": "file", "path": str(refinedweb), "text_column": "body", "n_texts": 3}
    with pytest.raises(
        DataError, match=r"eval set 'web'.*refinedweb.parquet' has no column 'body'"
    ):
        build_eval_set("web", spec, 0, tmp_path / "o.parquet")
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=r"eval set 'web': file '.*nope.jsonl' does not exist"):
        build_eval_set(
            "web", {"source": "file", "path": str(missing), "n_texts": 3}, 0, tmp_path / "o"
        )
    with pytest.raises(DataError, match=r"eval set 'rw'.*has no split 'test'"):
        build_eval_set("rw", hf(refinedweb, split="test", n_texts=3), 0, tmp_path / "o.parquet")
    with pytest.raises(DataError, match=r"eval set 'rw'.*dataset 'parquet'.*not found"):
        build_eval_set(
            "rw", hf(missing.with_suffix(".parquet"), n_texts=3), 0, tmp_path / "o.parquet"
        )
    with pytest.raises(DataError, match=r"eval set 'rw': n_texts=500 but .* only \d+ texts"):
        build_eval_set("rw", hf(refinedweb, n_texts=500, buffer_size=10), 0, tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_a_dataset_absent_from_the_offline_cache_is_named(tmp_path, flag):
    # `datasets` and `huggingface_hub` read these at import: a fresh process sees them.
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), flag: "1"}
    env.pop("HF_DATASETS_CACHE", None), env.pop("HF_HUB_CACHE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "workflow"), env.get("PYTHONPATH", "")])
    spec = {
        "source": "hf",
        "dataset": "tiiuae/falcon-refinedweb",
        "text_column": "content",
        "n_texts": 5,
    }
    run = subprocess.run(
        [sys.executable, "-m", "qid.cli", "evalset", "--name", "refinedweb", "--seed", "0"]
        + ["--spec", json.dumps(spec), "--out", str(tmp_path / "rw.parquet")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 1
    error = run.stderr.strip()
    assert "\n" not in error, error
    assert error.startswith(
        "qid evalset: error: eval set 'refinedweb': dataset 'tiiuae/falcon-refinedweb'"
    )
    assert "not in the local Hugging Face cache" in error and "offline" in error
    assert str(tmp_path / "hf") in error
    assert not (tmp_path / "rw.parquet").exists()


def test_calibration_from_a_dataset_is_seeded_windows(refinedweb, tmp_path):
    spec = {**hf(refinedweb, min_chars=20), "n_samples": 6, "length": 16, "n_texts": 40}
    summary = build_calibration(spec, seed=0, out=tmp_path / "c.parquet")
    windows = pd.read_parquet(tmp_path / "c.parquet")["text"].tolist()
    pool = select_texts("x", spec, 40, seed=0).text.tolist()
    assert summary["n_samples"] == len(windows) == 6
    assert all(len(w) == 8 * 16 and w in "\n\n".join(pool) for w in windows)
    assert len(set(windows)) == len(windows)  # random places, not one repeated window
    build_calibration(spec, seed=0, out=tmp_path / "again.parquet")
    assert pd.read_parquet(tmp_path / "again.parquet")["text"].tolist() == windows
    build_calibration(spec, seed=1, out=tmp_path / "other.parquet")
    assert pd.read_parquet(tmp_path / "other.parquet")["text"].tolist() != windows


def test_calibration_needs_enough_text_and_the_right_keys(refinedweb, tmp_path):
    spec = {"source": "file", "path": str(refinedweb), "text_column": "content"}
    with pytest.raises(DataError, match="fewer than one window"):
        build_calibration({**spec, "n_samples": 2, "length": 4096}, 0, tmp_path / "c.parquet")
    with pytest.raises(
        DataError, match=r"'data.calibration.n_texts' is not used by source 'corpus'"
    ):
        build_calibration({"n_samples": 2, "length": 8, "n_texts": 4}, 0, tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"'data.corpus' is needed"):
        build_calibration({"n_samples": 2, "length": 8}, 0, tmp_path / "c.parquet", data={})


def test_evalset_command_writes_the_set_and_reports_errors_on_one_line(
    refinedweb, tmp_path, capsys
):
    out = tmp_path / "rw.parquet"
    spec = json.dumps(
        {"source": "file", "path": str(refinedweb), "text_column": "content", "n_texts": 7}
    )
    main(["evalset", "--name", "rw", "--seed", "0", "--spec", spec, "--out", str(out)])
    assert len(read_texts(out)) == 7
    bad = json.dumps({"source": "file", "path": str(refinedweb), "n_texts": 7, "dataset": "x"})
    with pytest.raises(SystemExit) as exit_:
        main(["evalset", "--name", "rw", "--seed", "0", "--spec", bad, "--out", str(out)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "qid evalset: error: eval set 'rw': config key 'eval_sets.rw.dataset' is not used by "
        "source 'file' (its keys: id_column, join, min_chars, n_texts, path, source, text_column, "
        "text_unit)"
    )


def test_the_workflow_builds_each_set_with_its_own_job(refinedweb, tmp_path):
    """A dry run: one eval_set job per set, the corpus split passed only to what uses it."""
    import yaml

    config = yaml.safe_load((ROOT / "tests" / "micro" / "config.yaml").read_text())
    config["eval_sets"]["web"] = {"source": "file", "path": str(refinedweb), "n_texts": 5}
    config["eval_sets"]["web"]["text_column"] = "content"
    config["data"]["calibration"].update(hf(refinedweb, n_texts=20))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "-s", str(ROOT / "Snakefile")]
        + ["--configfile", str(tmp_path / "study.yaml"), "--directory", str(tmp_path)]
        + ["results/data/eval/web.parquet", "results/data/eval/sotu.parquet"]
        + ["results/data/calibration.parquet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    commands = re.findall(r"^(?:Shell command: )?(qid .*)$", run.stdout + run.stderr, re.M)
    by_name = {c.split()[1] + (c.split()[3] if "evalset" in c else ""): c for c in commands}
    assert sorted(by_name) == ["calibration", "evalsetsotu", "evalsetweb"]
    assert "--data" in by_name["evalsetsotu"] and "--data" not in by_name["evalsetweb"]
    assert (
        "--data" not in by_name["calibration"] and '"dataset":"parquet"' in by_name["calibration"]
    )
    assert not any(c.startswith("qid corpus") for c in commands)  # no trained suite asked for
