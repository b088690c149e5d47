"""A job's fixed cost (issue 14): which libraries each `qid` stage loads before it does any work.

Each case runs `qid <stage> ...` in a fresh process with QID_IMPORT_ONLY=1 (the command's own
list of what it loads, `qid.cli.imports`, then exit 0) and reads which heavy libraries are in
`sys.modules`. The stages of the default study: figures, fits and tables load no torch; training
and the cells of methods other than GPTQ/AWQ load no quantization library and no torchao (which
transformers would import whenever it is installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "transformers",
    "torchao",
    "gptqmodel",
    "llmcompressor",
    "bitsandbytes",
    "matplotlib",
    "lmfit",
    "pandas",
    "datasets",
)
QUANT = {"torchao", "gptqmodel", "llmcompressor", "bitsandbytes"}
MODEL = {"torch", "transformers"}

# Run as the `qid` script is (main() with sys.argv), then list the heavy libraries loaded.
PROBE = """
import json, sys
from qid.cli import main
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["qid", *args]
try:
    main()
except SystemExit as e:
    assert not e.code, f"exit status {e.code}"
print(json.dumps([m for m in heavy if sys.modules.get(m) is not None]))
"""


def loaded(args: list[str], *, import_only: bool = True, cwd: Path | None = None) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    env.pop("QID_IMPORT_ONLY", None)
    if import_only:
        env["QID_IMPORT_ONLY"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


ARCH = '{"hidden_size":64,"num_heads":2,"num_layers":2}'
TRAINING = '{"batch_size":32,"context":128,"lr":0.002}'
TRAIN = ["--suite", "s", "--size", "h64-l2", "--arch", ARCH, "--training", TRAINING]
TRAIN += ["--steps", "40,63", "--seed", "0", "--out", "ckpt", "--log", "train.parquet"]
CELL = ["--suite", "s", "--size", "h64-l2", "--step", "40", "--options", "{}"]
CELL += ["--texts", "sotu.parquet", "--context", "128", "--threads", "1"]


@pytest.mark.parametrize(
    "args",
    [
        ["figures"],  # every figure's drawer
        ["figures", "--names", "fig14_bitnet", "--data", "train=t.parquet"],
        ["fit", "--table", "qid.parquet", "--method", "rtn", "--bootstrap", "10"],
        ["aggregate", "a.json", "--out", "qid.parquet"],
        ["table1", "--fits", "fits.json", "--by-bits"],
        ["summary", "--fits", "fits.json"],
        ["bitnet", "a.json", "--table", "qid.parquet", "--bits", "2"],
        ["evalset", "--name", "wiki", "--seed", "0", "--spec", '{"source":"wiki_offline"}']
        + ["--out", "e.parquet"],
        ["calibration", "--seed", "0", "--spec", '{"length":128,"n_samples":32}'],
    ],
    ids=lambda a: a[0] + ("-" + a[2] if a[:2] == ["figures", "--names"] else ""),
)
def test_figures_fits_tables_and_texts_load_no_torch(args):
    libraries = loaded(args)
    assert not libraries & (MODEL | QUANT), libraries
    assert "pandas" in libraries  # the probe sees what a stage loads


@pytest.mark.parametrize(
    "args",
    [
        ["train", *TRAIN],
        ["train", "--bitnet", *TRAIN],
        ["cells", *CELL, "--cells", "rtn:2,rtn:3,rtn:4"],
        ["evaluate", "--checkpoint", "ckpt", "--texts", "sotu.parquet", "--out", "e.json"],
        ["evaluate", "--checkpoint", "c", "--method", "rtn", "--bits", "2", "--quantized", "q"]
        + ["--texts", "sotu.parquet", "--out", "e.json"],
    ],
    ids=["train", "train-bitnet", "cells-rtn", "evaluate-16bit", "evaluate-rtn"],
)
def test_training_and_rtn_cells_load_no_quantization_library(args):
    libraries = loaded(args)
    assert MODEL <= libraries, libraries
    assert not libraries & QUANT, libraries


def test_corpus_and_weights_load_no_quantization_library():
    corpus = loaded(["corpus", "--seed", "0", "--data", '{"corpus":"sotu"}'])
    weights = loaded(["weights", "ckpt", "--changes", "c.parquet", "--samples", "s.parquet"])
    assert "transformers" in corpus and not corpus & QUANT, corpus
    assert "torch" in weights and not weights & (QUANT | {"transformers"}), weights


def test_a_cells_job_loads_each_of_its_methods_libraries():
    """The list follows the job's cells: GPTQ's library (and the torchao it needs), NF4's."""
    libraries = loaded(["cells", *CELL, "--cells", "bnb_nf4:4,gptq:2,rtn:2"])
    assert {"gptqmodel", "torchao", "bitsandbytes"} <= libraries, libraries


def test_the_import_only_list_covers_what_a_real_run_loads(tmp_path):
    """No drift: `qid table1` run for real (the published law) loads no heavy library that its
    import-only run does not, and the import-only run loads nothing more."""
    args = ["table1", "--out-md", "t.md", "--out-csv", "t.csv"]
    real = loaded(args, import_only=False, cwd=tmp_path)
    assert (tmp_path / "t.md").exists()  # it ran
    assert loaded(args, cwd=tmp_path) == real


def test_a_real_training_run_loads_what_its_import_only_run_does(tmp_path, tokenizer):
    """No drift on the heaviest stage: `qid train` run for real (two steps of a tiny model, as
    the `qid` script: torchao kept out) trains, and loads the same heavy libraries."""
    import numpy as np

    tokenizer.save_pretrained(tmp_path / "tok")
    text = " ".join(["the state of the union is strong and the people are free"] * 400)
    np.save(tmp_path / "ids.npy", np.array(tokenizer(text)["input_ids"], dtype=np.uint16))
    training = '{"batch_size":4,"betas":[0.9,0.95],"context":32,"lr":0.002,"min_lr_ratio":0.1,'
    training += '"rotary_pct":0.25,"warmup_steps":1,"weight_decay":0.1}'
    args = ["train", *TRAIN[:6], "--training", training, "--steps", "2,3", "--seed", "0"]
    args += ["--train-ids", "ids.npy", "--tokenizer", "tok", "--out", "ckpt", "--log", "t.parquet"]
    real = loaded(args, import_only=False, cwd=tmp_path)
    assert (tmp_path / "ckpt" / "step3").is_dir()  # it trained
    assert "torchao" not in real
    assert loaded(args, cwd=tmp_path) == real
