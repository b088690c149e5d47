"""Every method qid runs without calibration, on a zoo of architectures (tests/zoo.py): quantize,
save, reload in a fresh process, evaluate; and one `local` suite of a non-NeoX architecture
(Llama, tied embeddings, widths 32 does not divide) through the workflow end to end.

GPTQ and AWQ on the zoo: tests/test_gptq_archs.py, tests/test_awq_archs.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
import zoo
from conftest import snakemake

from qid.quantize import quantize_cell

CELLS = [("rtn", 2, {"group_size": 32}), ("rtn", 4, {"group_size": 32}), ("bnb_nf4", 4, {})]

# Evaluates each (checkpoint, quantized dir) pair with qid's evaluator in one fresh process.
EVALUATE = """
import json, sys
from pathlib import Path
from qid.evaluate import run
out = {}
for name, (ckpt, method, bits, qdir, texts) in json.loads(sys.argv[1]).items():
    kw = dict(context=64, batch_tokens=4096)
    base, = run(Path(ckpt), [Path(texts)], [Path(qdir + "-base.json")], **kw)
    q, = run(Path(ckpt), [Path(texts)], [Path(qdir + ".eval.json")], method=method, bits=bits,
             quantized=Path(qdir), **kw)
    out[name] = {"qid": q["loss"] - base["loss"], "loss_16": base["loss"], "n": base["n_params"]}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "heldout.parquet"
    pd.DataFrame({"text": zoo.make_texts(24, seed=99)}).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def zoo_cells(tmp_path_factory, texts):
    """(arch, method, bits) -> (record, qid, loss_16, N): quantized here, evaluated afresh."""
    root = tmp_path_factory.mktemp("zoo")
    records, jobs = {}, {}
    for arch in zoo.ARCHS:
        ckpt = zoo.build(arch, root / arch, steps=40)
        for method, bits, options in CELLS:
            name = f"{arch}/{method}-{bits}"
            out = root / "q" / arch / f"{method}-{bits}"
            records[name] = quantize_cell(
                ckpt, out, Path(f"{out}.json"), method, bits, options, None
            )
            jobs[name] = [str(ckpt), method, bits, str(out), str(texts)]
    run = subprocess.run(
        [sys.executable, "-c", EVALUATE, json.dumps(jobs)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    return {name: (records[name], measured[name]) for name in records}


@pytest.mark.parametrize("arch", list(zoo.ARCHS))
def test_every_architecture_is_quantized_and_measured(arch, zoo_cells):
    from transformers import AutoConfig, AutoModelForCausalLM

    from qid.checkpoints import non_embedding_params
    from qid.quantize.layers import survey

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(zoo_cells[f"{arch}/rtn-2"][0]["checkpoint"])
        )
    expected = survey(model)
    for method, bits, _ in CELLS:
        record, measured = zoo_cells[f"{arch}/{method}-{bits}"]
        # Every linear map of the blocks, Conv1D included; the head and embeddings left, named.
        assert (
            record["quantized_layers"]
            == len(expected.layers)
            == 4 * zoo.LAYERS
            + (3 * zoo.LAYERS if arch in ("llama", "qwen2", "mistral", "olmo2") else 0)
            + (2 * zoo.LAYERS if arch == "opt" else 0)
        )
        assert record["quantized_params"] == expected.params
        assert any("output head" in why for why in record["skipped_layers"].values())
        assert all(why in ("embedding",) or why.startswith("output head")
                   for why in record["skipped_layers"].values())  # fmt: skip
        assert math.isfinite(measured["qid"]), (method, bits)
        assert measured["n"] == non_embedding_params(model)
    assert zoo_cells[f"{arch}/rtn-2"][1]["qid"] > zoo_cells[f"{arch}/rtn-4"][1]["qid"] > -0.01
    assert zoo_cells[f"{arch}/rtn-2"][1]["qid"] > 0.01


def _local_llama_study(root: Path, texts: Path, methods: dict) -> Path:
    """A `local` suite of Llama checkpoints (tied embeddings, widths 72/200) at two steps."""
    if not (root / "ckpts").exists():
        for step in (10, 40):
            zoo.build("llama", root / "ckpts" / "s" / f"step{step}", steps=step)
    calibration = root / "calibration.parquet"
    pd.DataFrame({"text": zoo.make_texts(32, seed=7)}).to_parquet(calibration)
    config = {
        "seed": 0,
        "data": {
            "calibration": {
                "source": "file",
                "path": str(calibration),
                "n_samples": 16,
                "length": 48,
            }
        },  # fmt: skip
        "eval_sets": {"toy": {"source": "file", "path": str(texts), "n_texts": "all"}},
        "suites": {
            "llama": {
                "source": "local",
                "path": str(root / "ckpts" / "{size}" / "step{step}"),
                "tokens_per_step": 1024,
                "sizes": {"s": {}},
                "steps": [10, 40],
            }
        },
        "methods": methods,
        "execution": {"per_job": "checkpoint"},
        "evaluate": {"context": 64, "batch_tokens": 4096},
        "fit": {"method": "rtn", "eval_set": "toy"},
    }
    path = root / f"llama-{len(list(root.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_local_llama_suite_runs_through_the_workflow(tmp_path, texts):
    """RTN at a group size that divides neither width, and GPTQ, through Snakemake."""
    methods = {"rtn": {"bits": [2, 4], "group_size": 32}, "gptq": {"bits": [2], "group_size": 32}}
    configfile = _local_llama_study(tmp_path, texts, methods)
    run = snakemake(tmp_path, "results/qid.parquet", configfile=configfile)
    assert run.returncode == 0, run.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "results" / "qid.parquet")
    assert len(table) == 2 * 3
    assert (table.tokens == table.step * 1024).all()
    assert table.qid.map(math.isfinite).all()
    two = table[table.bits == 2]
    # RTN at 2 bits hurts at every step; GPTQ, calibrated in domain, once the model has learned
    # something (at step 10 it is within noise of 0).
    assert (two[two.method == "rtn"].qid > 0).all(), two[["method", "step", "qid"]]
    assert (two[two.step == 40].qid > 0).all(), two[["method", "step", "qid"]]
    record = json.loads((tmp_path / "results/llama/quantized/s/step40/rtn-2bit.json").read_text())
    assert record["quantized_layers"] == 7 * zoo.LAYERS
    assert record["skipped_layers"]["lm_head"] == "output head (tied to the input embeddings)"


def test_a_cell_the_local_architecture_cannot_take_stops_the_first_job(tmp_path, texts):
    """Group 128 on 72-wide layers: the fetch job refuses it in one line, before any eval."""
    methods = {"rtn": {"bits": [2], "group_size": 128}}
    configfile = _local_llama_study(tmp_path, texts, methods)
    run = snakemake(tmp_path, "results/qid.parquet", configfile=configfile)
    assert run.returncode != 0
    log = (tmp_path / "logs/llama/fetch/s/step10.log").read_text()
    error = [line for line in log.splitlines() if "qid fetch: error" in line or "Traceback" in line]
    assert error == [
        "qid fetch: error: config key 'methods.rtn.group_size': group size 128 is wider than "
        "the layer: layer 'model.layers.0.self_attn.q_proj' has input width 72; use a group "
        "size that divides it, or -1"
    ]
    assert not list(tmp_path.glob("results/llama/eval/**/*.json"))
