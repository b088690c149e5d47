"""Checkpoints that are not trained here: a revision of a Hugging Face hub repo (Pythia's
`EleutherAI/pythia-{size}` at `revision="step{N}"`) or a local directory of any causal LM.

`fetch` puts the checkpoint at the grid's checkpoint path as a directory of links to its files
(in the shared HF cache, or the local directory) plus `qid_checkpoint.json` (suite, size, step,
D, N, and the weights' fingerprint: qid.integrity), so every later stage reads it exactly as it
reads a checkpoint trained here. `release` deletes a fetched revision from the HF cache once all
its cells are done (12B x 20 checkpoints is terabytes); the config's `keep: true` skips that.
"""

from __future__ import annotations

import json
from pathlib import Path

from qid import QidError
from qid.grid import CHECKPOINT_META
from qid.integrity import checkpoint_fingerprint

# What a causal LM needs from a repo: config, tokenizer and weights, safetensors where the
# revision has them (older Pythia revisions hold only pytorch_model.bin; fetching both would
# double the disk).
MODEL_FILES = ["*.json", "*.txt", "*.model", "tokenizer*"]
# The config attributes that bound a model's positions, as transformers' configs name them.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")


class SourceError(QidError):
    pass


def hub_snapshot(repo: str, revision: str, cache_dir: str | None) -> tuple[Path, str]:
    """Download (or, offline, find) one revision of a hub repo in the HF cache: (path, commit)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"Hugging Face cache {cache_dir}" if cache_dir else "the Hugging Face cache"
    try:
        path = None
        for weights in ("*.safetensors", "*.bin"):
            path = Path(
                snapshot_download(
                    repo,
                    revision=revision,
                    cache_dir=cache_dir,
                    allow_patterns=[*MODEL_FILES, weights],
                )
            )
            if any(path.glob(weights)):
                break
    except RepositoryNotFoundError:
        raise SourceError(f"hub repo {repo!r} does not exist (or is private)") from None
    except RevisionNotFoundError:
        raise SourceError(f"hub repo {repo!r} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise SourceError(
            f"hub repo {repo!r} at revision {revision!r} is not in {where} and the hub is "
            "unreachable (HF_HUB_OFFLINE=1, or no network)"
        ) from None
    if not (path / "config.json").is_file():
        raise SourceError(f"hub repo {repo!r} at revision {revision!r} holds no config.json")
    return path, path.name


def count_params(path: Path) -> int:
    """N (non-embedding parameters) from the checkpoint's config, on the meta device: no
    weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from qid.checkpoints import non_embedding_params

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return non_embedding_params(model)


def link_checkpoint(files: Path, out: Path, meta: dict) -> dict:
    """`out`: a link per file of `files`, plus qid's metadata (N counted when not given) and the
    weights' fingerprint (a hub snapshot's from its blob names, a local directory's hashed)."""
    if not (files / "config.json").is_file():
        raise SourceError(f"checkpoint directory {str(files)!r} holds no config.json")
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(files.iterdir()):
        if f.name != CHECKPOINT_META and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    meta = {**meta, "n_params": meta.get("n_params") or count_params(files)}
    meta |= checkpoint_fingerprint(files)
    (out / CHECKPOINT_META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def checkpoint_meta(spec: dict, suite: str, size: str, step: int) -> dict:
    """qid's metadata of checkpoint (size, step) of a fetched suite: D = step x tokens_per_step
    (the size's, else the suite's), N where the config gives it (else counted on fetch), and
    the learning rate where the suite's schedule is published (`lr_schedule`)."""
    sizes = spec.get("sizes", {}).get(size, {})
    per_step = sizes.get("tokens_per_step", spec.get("tokens_per_step"))
    if per_step is None:
        raise QidError(f"suite {suite!r} gives no tokens_per_step: D would be unknown")
    return {
        "suite": suite,
        "size": size,
        "step": step,
        "tokens": step * per_step,
        "tokens_per_step": per_step,
        "n_params": sizes.get("n_params"),
        **published_schedule(spec, size, step),
    }


def published_schedule(spec: dict, size: str, step: int) -> dict:
    """The schedule, rate and decay onset at `step` (qid.schedule.schedule_meta) of a fetched
    suite whose schedule is published (its `lr_schedule`, the peak per size where sizes differ);
    nothing where it is not given."""
    from qid.schedule import schedule_meta

    published = spec.get("lr_schedule")
    if published is None:
        return {}
    peak = spec.get("sizes", {}).get(size, {}).get("lr")
    return schedule_meta(step, published, published["total_steps"], peak)


def fetch(spec: dict, size: str, step: int, out: Path, meta: dict) -> dict:
    """Put checkpoint (size, step) of a `hub` or `local` suite `spec` at `out`."""
    fields = {"size": size, "step": step}
    if spec["source"] == "hub":
        repo = spec["repo"].format(**fields)
        revision = spec.get("revision", "step{step}").format(**fields)
        files, commit = hub_snapshot(repo, revision, spec.get("cache_dir"))
        meta = {**meta, "repo": repo, "revision": revision, "commit": commit}
    elif spec["source"] == "local":
        files = Path(spec["path"].format(**fields))
        if not files.is_dir():
            raise SourceError(f"local checkpoint {str(files)!r} ({size}, step {step}) is missing")
        meta = {**meta, "path": str(files)}
    else:
        raise SourceError(f"suite source {spec['source']!r} is not fetched")
    return link_checkpoint(files, out, meta)


def position_limit(config) -> tuple[str, int] | None:
    """(attribute, positions) of a transformers config's position limit; None for a model
    without one (e.g. ALiBi)."""
    for key in POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return key, value
    return None


def check_context(checkpoint: Path, context: int, meta: dict) -> None:
    """Refuse an evaluation context beyond the checkpoint's positions, before any evaluation:
    a rotary model would extrapolate silently, a learned-position one fail mid-study."""
    from transformers import AutoConfig

    limit = position_limit(AutoConfig.from_pretrained(checkpoint))
    if limit is not None and context > limit[1]:
        model = (
            f"model {meta['repo']!r} (revision {meta['revision']!r})"
            if "repo" in meta
            else f"checkpoint {meta.get('path', str(checkpoint))!r}"
        )
        raise SourceError(
            f"config key 'evaluate.context': {context} tokens is beyond the {limit[1]} positions "
            f"of {model} ({limit[0]} in its config.json)"
        )


def release(repo: str, commit: str, cache_dir: str | None) -> int:
    """Delete one fetched revision from the HF cache; the bytes freed (0 if already gone)."""
    from huggingface_hub import scan_cache_dir

    cache = scan_cache_dir(cache_dir)
    known = {r.commit_hash for info in cache.repos if info.repo_id == repo for r in info.revisions}
    if commit not in known:
        return 0
    strategy = cache.delete_revisions(commit)
    strategy.execute()
    return strategy.expected_freed_size


def release_checkpoint(checkpoint: Path, cache_dir: str | None, out: Path) -> dict:
    """`release` the hub revision of a fetched checkpoint and write the record of what was freed
    (repo, revision, commit, freed_bytes) to `out`; the record."""
    from qid.checkpoints import read_meta

    meta = read_meta(checkpoint)
    if "commit" not in meta:
        raise QidError(f"checkpoint {str(checkpoint)!r} was not fetched from the hub")
    freed = release(meta["repo"], meta["commit"], cache_dir)
    record = {k: meta[k] for k in ("repo", "revision", "commit")} | {"freed_bytes": freed}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return record
