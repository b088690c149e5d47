"""Checkpoints from the hub and from local directories, through the real huggingface_hub and
transformers loading code, offline: a cache laid out as the hub lays it out."""

from __future__ import annotations

import json

import pytest
from conftest import put_in_hub_cache

from qid.evaluate import evaluate
from qid.fetch import SourceError, fetch, release
from qid.grid import CHECKPOINT_META

HUB = {"source": "hub", "repo": "EleutherAI/pythia-{size}"}


@pytest.fixture
def offline_cache(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE at import; patch the constant it consults.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub"
    commit = put_in_hub_cache(cache, "EleutherAI/pythia-tiny", "step10", tiny_checkpoint)
    return cache, commit


def test_fetch_resolves_a_revision_from_the_cache(offline_cache, tiny_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache, commit = offline_cache
    out = tmp_path / "ckpt"
    meta = fetch({**HUB, "cache_dir": str(cache)}, "tiny", 10, out, {"step": 10, "tokens": 20})
    assert meta["commit"] == commit and meta["revision"] == "step10"
    own = json.loads((tiny_checkpoint / CHECKPOINT_META).read_text())
    assert meta["n_params"] == own["n_params"]  # counted from the config alone
    assert json.loads((out / CHECKPOINT_META).read_text()) == meta
    # The fetched directory loads like any checkpoint and scores as the original does.
    texts = ["the state of the union is strong", "congress shall pass the new laws"]
    scores = [
        evaluate(
            AutoModelForCausalLM.from_pretrained(p).eval(),
            AutoTokenizer.from_pretrained(p),
            texts,
            context=16,
            batch_tokens=64,
        )["loss"]
        for p in (out, tiny_checkpoint)
    ]
    assert scores[0] == scores[1]


@pytest.mark.parametrize(
    ("repo", "revision"),
    [("EleutherAI/pythia-tiny", "step99"), ("EleutherAI/pythia-huge", "step10")],
)
def test_a_missing_revision_or_repo_is_named(offline_cache, tmp_path, repo, revision):
    cache, _ = offline_cache
    message = f"'{repo}' at revision '{revision}' is not in"
    spec = {"source": "hub", "repo": repo, "revision": revision, "cache_dir": str(cache)}
    with pytest.raises(SourceError, match=message):
        fetch(spec, "tiny", 10, tmp_path / "ckpt", {})
    assert not (tmp_path / "ckpt").exists()


def test_release_frees_the_revision_and_only_it(offline_cache, tiny_checkpoint, tmp_path):
    cache, commit = offline_cache
    other = put_in_hub_cache(cache, "EleutherAI/pythia-tiny", "step20", tiny_checkpoint)
    freed = release("EleutherAI/pythia-tiny", commit, str(cache))
    assert freed == 0  # step20 shares every blob (same files): nothing to free yet
    snapshots = cache / "models--EleutherAI--pythia-tiny" / "snapshots"
    assert not (snapshots / commit).exists() and (snapshots / other).exists()
    assert release("EleutherAI/pythia-tiny", commit, str(cache)) == 0  # already gone
    assert release("EleutherAI/pythia-tiny", other, str(cache)) > 0


def test_a_local_directory_is_a_source(tiny_checkpoint, tmp_path):
    spec = {"source": "local", "path": str(tiny_checkpoint.parent) + "/step{step}"}
    meta = fetch(spec, "h64-l2", 10, tmp_path / "ckpt", {"step": 10})
    assert (tmp_path / "ckpt" / "config.json").resolve() == tiny_checkpoint / "config.json"
    assert meta["n_params"] > 0 and meta["path"] == str(tiny_checkpoint)
    with pytest.raises(SourceError, match="local checkpoint .*step11.* is missing"):
        fetch(spec, "h64-l2", 11, tmp_path / "other", {})


def _fetch(spec: dict, out, *extra: str) -> None:
    from qid.cli import main

    main(["fetch", "--suite", "s", "--size", "tiny", "--step", "10", "--spec",
          json.dumps({**spec, "tokens_per_step": 64}), "--out", str(out), *extra])  # fmt: skip


def test_the_fetch_job_refuses_a_context_beyond_the_models_positions(
    offline_cache, tiny_checkpoint, tmp_path, capsys
):
    # The tiny model has 64 positions (max_position_embeddings): 64 is fine, 65 is not.
    local = {"source": "local", "path": str(tiny_checkpoint)}
    _fetch(local, tmp_path / "ok", "--context", "64")
    with pytest.raises(SystemExit):
        _fetch(local, tmp_path / "long", "--context", "65")
    err = capsys.readouterr().err.strip()
    assert err == (
        f"qid fetch: error: config key 'evaluate.context': 65 tokens is beyond the 64 positions "
        f"of checkpoint '{tiny_checkpoint}' (max_position_embeddings in its config.json)"
    )
    cache, _ = offline_cache
    with pytest.raises(SystemExit):
        _fetch({**HUB, "cache_dir": str(cache)}, tmp_path / "hub", "--context", "2048")
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "2048 tokens is beyond the 64 positions of model 'EleutherAI/pythia-tiny' "
        "(revision 'step10') (max_position_embeddings in its config.json)"
    )


def test_position_limits_by_any_name_and_none():
    from transformers import GPT2Config, PretrainedConfig

    from qid.fetch import position_limit

    assert position_limit(GPT2Config(n_positions=1024)) == ("max_position_embeddings", 1024)
    assert position_limit(PretrainedConfig(n_ctx=512)) == ("n_ctx", 512)
    assert position_limit(PretrainedConfig(max_sequence_length=4096)) == (
        "max_sequence_length",
        4096,
    )
    assert position_limit(PretrainedConfig()) is None  # e.g. ALiBi: no limit, any context
