"""Checkpoints you can trust (qid.integrity): weight fingerprints from saving, fetching and the
hub cache's blob names; duplicated weights and 16-bit loss rises flagged in the table and left
out of the fits, by name."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, TEXTS, put_in_hub_cache, snakemake

from qid import QidError
from qid.aggregate import aggregate
from qid.checkpoints import read_meta, save
from qid.fetch import fetch
from qid.grid import CHECKPOINT_META
from qid.integrity import checkpoint_fingerprint, sha256_file
from qid.laws import UnifiedLaw, fit_all
from qid.report import summary


def test_saved_copies_share_a_fingerprint_and_a_changed_model_does_not(tiny_checkpoint, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "training_args.bin").write_bytes(name.encode())  # not weights
        save(model, tokenizer, tmp_path / name, {"step": 1})
    with torch.no_grad():
        model.gpt_neox.layers[0].mlp.dense_h_to_4h.weight[0, 0] += 1e-3
    save(model, tokenizer, tmp_path / "changed", {"step": 1})
    a, b, changed = (read_meta(tmp_path / n) for n in ("a", "b", "changed"))
    assert a["fingerprint"] == b["fingerprint"] != changed["fingerprint"]
    file = tmp_path / "a" / "model.safetensors"
    assert a["weights"] == {"model.safetensors": hashlib.sha256(file.read_bytes()).hexdigest()}
    assert sha256_file(file) == a["weights"]["model.safetensors"]
    assert a["step"] == 1  # the caller's metadata is kept


def test_a_hub_snapshot_is_fingerprinted_by_its_blob_names(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub"
    put_in_hub_cache(cache, "Org/tiny", "step10", tiny_checkpoint)
    local = fetch({"source": "local", "path": str(tiny_checkpoint)}, "s", 10, tmp_path / "l", {})
    # A hub snapshot is not read at all: the blob's file name is its sha256.
    monkeypatch.setattr("qid.integrity.sha256_file", lambda path: pytest.fail(f"read {path}"))
    spec = {"source": "hub", "repo": "Org/tiny", "cache_dir": str(cache)}
    hub = fetch(spec, "s", 10, tmp_path / "h", {"step": 10})
    blobs = {p.name for p in (cache / "models--Org--tiny" / "blobs").iterdir()}
    assert hub["weights"]["model.safetensors"] in blobs
    assert hub["weights"] == local["weights"] and hub["fingerprint"] == local["fingerprint"]
    assert json.loads((tmp_path / "h" / CHECKPOINT_META).read_text())["fingerprint"]
    with pytest.raises(QidError, match="holds no weight file"):
        checkpoint_fingerprint(tmp_path)


def record(tmp_path, size, step, method, nll, fingerprint="", weights=None, eval_set="e"):
    rec = {
        "suite": "s",
        "size": size,
        "step": step,
        "tokens": step * 100,
        "n_params": {"a": 1000, "b": 4000}[size],
        "method": method,
        "bits": 16 if method == "base" else 2,
        "eval_set": eval_set,
        "loss": sum(nll) / 40,
        "nll_sum": sum(nll),
        "model_tokens": 50,
        "reference_tokens": 40,
        "texts": len(nll),
        "reference_tokenizer": "own",
        "nll_per_text": nll,
        "seed": 0,
        "fingerprint": fingerprint,
        "weights": weights,
        "versions": {},
    }
    path = tmp_path / f"{size}-{step}-{method}-{eval_set}.json"
    path.write_text(json.dumps(rec))
    return path


def checkpoint(tmp_path, size, step, nll, shards, eval_set="e"):
    """A 16-bit and a 2-bit record of one checkpoint whose weight files hash to `shards`."""
    weights = {f"model-{i}.safetensors": sha for i, sha in enumerate(shards)}
    fp = hashlib.sha256("\n".join(sorted(shards)).encode()).hexdigest()
    quantized = [x + 5 for x in nll]
    return [
        record(tmp_path, size, step, "base", nll, fp, weights, eval_set),
        record(tmp_path, size, step, "rtn", quantized, fp, weights, eval_set),
    ]


def test_aggregate_flags_duplicated_weights_and_a_loss_rise(tmp_path):
    paths = [
        *checkpoint(tmp_path, "a", 10, [30.0, 31.0, 29.0], ["s10", "t10"]),
        *checkpoint(tmp_path, "a", 20, [20.0, 21.0, 19.5], ["s20", "t20"]),
        *checkpoint(tmp_path, "a", 30, [15.0, 15.5, 14.0], ["s30", "final"]),  # #206's case
        *checkpoint(tmp_path, "a", 40, [16.0, 17.0, 15.5], ["s40", "final"]),
        *checkpoint(tmp_path, "a", 50, [16.5, 15.5, 17.5], ["s50", "t50"]),  # rise < its SE
        # Another size may hold the same files: only steps of one (suite, size) are compared.
        *checkpoint(tmp_path, "b", 10, [30.0, 30.0, 30.0], ["s10", "t10"]),
        *checkpoint(tmp_path, "b", 20, [20.0, 20.0, 20.0], ["u20", "v20"]),
    ]
    table = aggregate(paths)
    assert len(table) == 7 and len(set(table.fingerprint)) == 6
    flags = dict(zip(table["size"] + "/" + table.step.astype(str), table.flag, strict=True))
    assert flags == {
        "a/10": "",
        "a/20": "",
        "a/30": "duplicate_weights:step40",
        "a/40": "duplicate_weights:step30; loss_rise:step30",
        "a/50": "",
        "b/10": "",
        "b/20": "",
    }


def test_a_loss_rise_is_flagged_on_its_eval_set_only_and_old_records_pass(tmp_path):
    paths = [
        *checkpoint(tmp_path, "a", 10, [30.0, 31.0], ["x"], eval_set="e"),
        *checkpoint(tmp_path, "a", 20, [32.0, 33.0], ["y"], eval_set="e"),
        *checkpoint(tmp_path, "a", 10, [30.0, 31.0], ["x"], eval_set="f"),
        *checkpoint(tmp_path, "a", 20, [20.0, 21.0], ["y"], eval_set="f"),
        # A record made before fingerprints (none given) is never a duplicate.
        record(tmp_path, "b", 10, "base", [1.0, 1.0]),
        record(tmp_path, "b", 10, "rtn", [2.0, 2.0]),
        record(tmp_path, "b", 20, "base", [1.0, 1.0]),
        record(tmp_path, "b", 20, "rtn", [2.0, 2.0]),
    ]
    table = aggregate(paths).set_index(["size", "step", "eval_set"])
    assert table.flag[("a", 20, "e")] == "loss_rise:step10"
    assert (table.flag.drop(("a", 20, "e")) == "").all()


def fit_table() -> pd.DataFrame:
    law = UnifiedLaw(k=0.05, alpha=0.3, beta=0.6, gamma=4.0)
    rng = np.random.default_rng(0)
    rows = [
        {
            "suite": "s",
            "size": f"n{n:g}",
            "step": step,
            "n_params": n,
            "tokens": step * 1e6,
            "bits": b,
            "qid": law.qid(n, step * 1e6, b) * rng.lognormal(0, 0.05),
            "flag": "",
        }
        for n in (1e5, 1e6, 1e7)
        for step in (1, 3, 10, 30, 100)
        for b in (2, 3, 4)
    ]
    return pd.DataFrame(rows)


def test_the_fits_leave_flagged_rows_out_and_name_them():
    table = fit_table()
    # A duplicate of the final model at step 3 would pull the curve: its QiD is step 100's.
    bad = (table["size"] == "n100000") & table.step.isin([3, 100])
    table.loc[bad & (table.step == 3), "qid"] *= 50
    table.loc[bad, "flag"] = np.where(
        table.step[bad] == 3, "duplicate_weights:step100", "duplicate_weights:step3"
    )
    fits = fit_all(table)
    assert fits["excluded"]["flagged"] == [
        {"suite": "s", "size": "n100000", "step": 3, "flag": "duplicate_weights:step100"},
        {"suite": "s", "size": "n100000", "step": 100, "flag": "duplicate_weights:step3"},
    ]
    assert fits["meta"]["rows"] == len(table) - 6 == fits["unified"]["n_points"]
    clean = fit_all(table[~bad])["unified"]["params"]
    assert fits["unified"]["params"]["beta"] == clean["beta"]
    assert fit_all(fit_table())["excluded"] == {"flagged": []}
    text = summary(fits)
    assert "## Checkpoints left out of the fits" in text
    assert "| s | n100000 | 3 | `duplicate_weights:step100` | its weights" in text
    table["flag"] = "loss_rise:step1"
    with pytest.raises(QidError, match=r"all 45 are flagged \(loss_rise\)"):
        fit_all(table)


# --- end to end: a `local` suite with one step's weights copied into the next -----------------

SIZES = {"a": {"hidden_size": 32, "num_layers": 1, "num_heads": 1},
         "b": {"hidden_size": 64, "num_layers": 2, "num_heads": 2}}  # fmt: skip
STEPS = [4, 12, 40]


def train_suite(root, tokenizer) -> None:
    """Tiny GPT-NeoX models trained a few steps apart on the toy texts, saved at STEPS."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from qid.checkpoints import model_config

    ids = torch.tensor([i for t in TEXTS for i in tokenizer(t)["input_ids"]])
    windows = ids[: ids.numel() // 32 * 32].view(-1, 32)
    for i, (size, arch) in enumerate(SIZES.items()):
        torch.manual_seed(i)
        model = GPTNeoXForCausalLM(model_config(arch, len(tokenizer), 64, 0.25))
        optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for step in range(1, STEPS[-1] + 1):
            batch = windows[torch.randint(len(windows), (8,))]
            model(input_ids=batch, labels=batch).loss.backward()
            optim.step()
            optim.zero_grad()
            if step in STEPS:
                model.save_pretrained(root / size / f"step{step}")
                tokenizer.save_pretrained(root / size / f"step{step}")


@pytest.mark.slow
def test_a_copied_checkpoint_is_flagged_and_left_out_of_the_fits(tmp_path, tokenizer):
    train_suite(tmp_path / "ckpt", tokenizer)
    # The mistake: size a's step 12 weights served again as step 40 (pythia #205).
    shutil.copy(
        tmp_path / "ckpt/a/step12/model.safetensors", tmp_path / "ckpt/a/step40/model.safetensors"
    )
    (tmp_path / "toy.txt").write_text("\n".join(TEXTS) + "\n")
    micro = yaml.safe_load((ROOT / "tests" / "micro" / "config.yaml").read_text())
    config = {
        "seed": 0,
        "data": micro["data"],
        "eval_sets": {"toy": {"source": "file", "path": str(tmp_path / "toy.txt"), "n_texts": 40}},
        "suites": {
            "toy": {
                "source": "local",
                "path": str(tmp_path / "ckpt") + "/{size}/step{step}",
                "tokens_per_step": 256,
                "sizes": {"a": {}, "b": {}},
                "steps": STEPS,
            }
        },
        "methods": {"rtn": {"bits": [2, 3, 4], "group_size": 32}},
        "execution": {"per_job": "checkpoint"},
        "evaluate": micro["evaluate"],
        "fit": {"method": "rtn", "eval_set": "toy", "bootstrap": 20, "validate": False},
    }
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    run = snakemake(work, "results/fits.json", configfile=tmp_path / "toy.yaml")
    assert run.returncode == 0, run.stderr[-3000:]

    table = pd.read_parquet(work / "results" / "qid.parquet")
    assert len(table) == len(SIZES) * len(STEPS) * 3
    flags = table.groupby(["size", "step"]).flag.agg(set).to_dict()
    assert flags == {
        ("a", 4): {""},
        ("a", 12): {"duplicate_weights:step40"},
        ("a", 40): {"duplicate_weights:step12"},
        **{("b", s): {""} for s in STEPS},
    }
    fp = table.groupby(["size", "step"]).fingerprint.first()
    assert fp["a", 12] == fp["a", 40] and fp.nunique() == 5
    fits = json.loads((work / "results" / "fits.json").read_text())
    assert fits["excluded"]["flagged"] == [
        {"suite": "toy", "size": "a", "step": 12, "flag": "duplicate_weights:step40"},
        {"suite": "toy", "size": "a", "step": 40, "flag": "duplicate_weights:step12"},
    ]
    assert fits["meta"]["rows"] == len(table) - 6
