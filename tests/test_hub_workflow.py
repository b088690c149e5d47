"""A micro study of hub checkpoints, offline: revisions of two tiny GPT-NeoX repos laid out in a
Hugging Face cache as the hub lays them out, fetched by the real huggingface_hub code under
HF_HUB_OFFLINE=1, quantized, evaluated, and deleted from the cache once their cells are done."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import ROOT, put_in_hub_cache, snakemake

pytestmark = pytest.mark.slow
SIZES = {"a": {"hidden_size": 32, "num_layers": 1, "num_heads": 1}, "b": {"hidden_size": 64,
         "num_layers": 2, "num_heads": 2}}  # fmt: skip
STEPS = [8, 24]


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tokenizer):
    import torch
    from transformers import GPTNeoXForCausalLM

    from qid.checkpoints import model_config, non_embedding_params

    root = tmp_path_factory.mktemp("hub")
    counted = {}
    for i, (size, arch) in enumerate(SIZES.items()):
        for step in STEPS:
            torch.manual_seed(100 * i + step)
            model = GPTNeoXForCausalLM(model_config(arch, len(tokenizer), 64, 0.25))
            files = root / "files" / size / f"step{step}"
            model.save_pretrained(files)
            tokenizer.save_pretrained(files)
            put_in_hub_cache(root / "cache", f"Org/tiny-{size}", f"step{step}", files)
        counted[size] = non_embedding_params(model)
    micro = yaml.safe_load((ROOT / "tests" / "micro" / "config.yaml").read_text())
    config = {
        **{k: micro[k] for k in ("seed", "data", "evaluate", "fit")},
        "eval_sets": {"sotu": micro["eval_sets"]["sotu"]},
        "suites": {
            "tiny": {
                "source": "hub",
                "repo": "Org/tiny-{size}",
                "tokens_per_step": 1000,
                "cache_dir": str(root / "cache"),
                "sizes": {"a": {}, "b": {"n_params": 1234}},
                "steps": STEPS,
            }
        },
        "methods": {"rtn": {"bits": [2, 4], "group_size": 32}},
        "execution": {"per_job": "checkpoint"},
    }
    (root / "hub.yaml").write_text(yaml.safe_dump(config))
    return root, counted


def test_hub_revisions_are_fetched_evaluated_and_released(hub, tmp_path):
    root, counted = hub
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    targets = ["results/qid.parquet"] + [
        f"results/tiny/released/{size}/step{step}.json" for size in SIZES for step in STEPS
    ]
    run = snakemake(tmp_path, *targets, configfile=root / "hub.yaml", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "results" / "qid.parquet")
    assert len(table) == len(SIZES) * len(STEPS) * 2
    assert (table.tokens == table.step * 1000).all()
    n = table.groupby("size").n_params.first()
    assert n["a"] == counted["a"] and n["b"] == 1234  # counted from the config, or as given
    assert table.loss_16.nunique() == len(SIZES) * len(STEPS)  # every revision its own model
    for size in SIZES:
        for step in STEPS:
            record = json.loads(
                (tmp_path / f"results/tiny/released/{size}/step{step}.json").read_text()
            )
            assert record["revision"] == f"step{step}" and record["repo"] == f"Org/tiny-{size}"
            # The link directory is a temp output: gone once its last job is done.
            assert not (tmp_path / f"results/tiny/checkpoints/{size}/step{step}").exists()
        # Every revision deleted from the cache (huggingface_hub drops the emptied repo too).
        assert not (root / "cache" / f"models--Org--tiny-{size}").exists()

    # A revision the cache lacks fails its fetch job, naming the repo and revision.
    config = yaml.safe_load((root / "hub.yaml").read_text())
    config["suites"]["tiny"]["steps"] = [8, 24, 99]
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "results/tiny/eval/a/step99/base/sotu.json",
                    configfile=tmp_path / "more.yaml", env=env)  # fmt: skip
    assert run.returncode != 0
    log = (tmp_path / "logs/tiny/fetch/a/step99.log").read_text()
    assert "'Org/tiny-a' at revision 'step99' is not in Hugging Face cache" in log
