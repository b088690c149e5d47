"""Misuse is answered in one line, `qid <stage>: error: ...`, exit status 1, before a model loads:
checkpoints that do not exist, are not models or hold a corrupt weight file; texts without a
`text` column or not parquet. Then what a run leaves for others: no abort at exit, files a team
can read, no GPTQModel log files in the project's logs/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TEXTS

from qid.cli import main
from qid.grid import CHECKPOINT_META


def _no_model_loads(monkeypatch) -> None:
    import transformers

    import qid.quantize

    def loaded(*_, **__):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", loaded)
    monkeypatch.setattr(qid.quantize, "quantize_cell", loaded)


def _one_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 1, err
    assert err.startswith(f"qid {argv[0]}: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def inputs(tiny_checkpoint, tmp_path) -> dict[str, Path]:
    """The tiny checkpoint and broken copies of it, and texts with and without a text column."""
    paths = {"good": tiny_checkpoint, "nowhere": tmp_path / "nowhere" / "step1"}
    for name in ("truncated", "trained", "no_config", "no_type"):
        shutil.copytree(tiny_checkpoint, tmp_path / name)
        paths[name] = tmp_path / name
    for name in ("truncated", "trained"):
        weights = paths[name] / "model.safetensors"
        os.truncate(weights, weights.stat().st_size // 2)  # a killed save or download
    (paths["truncated"] / CHECKPOINT_META).unlink()  # a model of one's own, not qid's
    paths["trained"] = tmp_path / "checkpoints" / "h64-l2" / "step10"  # `qid train --out`'s
    shutil.move(tmp_path / "trained", paths["trained"])
    (paths["no_config"] / "config.json").unlink()
    config = json.loads((paths["no_type"] / "config.json").read_text())
    del config["model_type"]
    (paths["no_type"] / "config.json").write_text(json.dumps(config))
    paths["texts"] = tmp_path / "texts.parquet"
    pd.DataFrame({"text": TEXTS}).to_parquet(paths["texts"])
    paths["notext"] = tmp_path / "notext.parquet"
    pd.DataFrame({"body": TEXTS}).to_parquet(paths["notext"])
    paths["csv"] = tmp_path / "texts.csv.parquet"
    paths["csv"].write_text("text\na text\n")
    paths["no_texts"] = tmp_path / "none.parquet"
    return paths


CHECKPOINTS = [
    ("nowhere", "--checkpoint '{nowhere}' does not exist"),
    ("no_config", "--checkpoint '{no_config}' has no config.json: not a model directory"),
    ("no_type", "--checkpoint '{no_type}': config.json gives no model_type"),
    (
        "truncated",
        "--checkpoint '{truncated}': weight file '{truncated}/model.safetensors' is truncated "
        "(278,480 bytes, its header promises 556,960); save or download the model again",
    ),
    (
        "trained",  # a checkpoint `qid train` wrote: the training run's directory is rerun
        "weight file '{trained}/model.safetensors' is truncated (278,480 bytes, its header "
        "promises 556,960); delete '{trained_run}' (the training run's output) and rerun "
        "snakemake",
    ),
]


def _fill(message: str, paths: dict[str, Path]) -> str:
    return message.format(**paths, trained_run=paths["trained"].parent)


@pytest.mark.parametrize(("name", "message"), CHECKPOINTS, ids=[n for n, _ in CHECKPOINTS])
@pytest.mark.parametrize("stage", ["evaluate", "quantize", "diagnose"])
def test_a_bad_checkpoint_is_one_line_before_a_model_loads(
    inputs, tmp_path, monkeypatch, capsys, stage, name, message
):
    _no_model_loads(monkeypatch)
    ckpt, texts = str(inputs[name]), str(inputs["texts"])
    argv = {
        "evaluate": ["--texts", texts, "--out", str(tmp_path / "e.json")],
        "quantize": ["--method", "rtn", "--bits", "4", "--out", str(tmp_path / "q")]
        + ["--record", str(tmp_path / "q.json")],
        "diagnose": ["--texts", texts, "--bits", "4", "--options", '{"group_size": 32}'],
    }[stage]
    err = _one_line(capsys, [stage, "--checkpoint", ckpt, *argv])
    assert _fill(message, inputs) in err


def test_a_hub_id_is_read_from_the_local_cache_or_refused_offline(
    tiny_checkpoint, tmp_path, monkeypatch, capsys
):
    """An `org/name` that is no path: its snapshot in the HF cache, else one line saying where
    hub models come from; nothing is downloaded."""
    import huggingface_hub.constants
    from conftest import put_in_hub_cache

    from qid.checkpoints import open_checkpoint

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    commit = put_in_hub_cache(cache, "Org/tiny", "main", tiny_checkpoint)
    assert open_checkpoint("Org/tiny") == cache / "models--Org--tiny" / "snapshots" / commit
    _no_model_loads(monkeypatch)
    texts = tmp_path / "texts.parquet"
    pd.DataFrame({"text": TEXTS}).to_parquet(texts)
    argv = ["evaluate", "--checkpoint", "Org/absent", "--texts", str(texts)]
    argv += ["--out", str(tmp_path / "e.json")]
    err = _one_line(capsys, argv)
    assert "--checkpoint 'Org/absent' does not exist, nor is it a hub model in the local HF " in err
    assert "`hf download Org/absent` by hand" in err


TEXTS_CASES = [
    ("notext", "--texts '{notext}' has no column 'text' (columns: body)"),
    ("csv", "--texts '{csv}' is not a parquet file (Parquet magic bytes not found"),
    ("no_texts", "--texts '{no_texts}' does not exist"),
]


@pytest.mark.parametrize(("name", "message"), TEXTS_CASES, ids=[n for n, _ in TEXTS_CASES])
def test_bad_eval_texts_are_one_line_before_a_model_loads(
    inputs, tmp_path, monkeypatch, capsys, name, message
):
    _no_model_loads(monkeypatch)
    ckpt, texts, out = str(inputs["good"]), str(inputs[name]), str(tmp_path / "e.json")
    err = _one_line(capsys, ["evaluate", "--checkpoint", ckpt, "--texts", texts, "--out", out])
    assert _fill(message, inputs) in err
    # qid quantize checks them before quantizing, not after
    argv = ["quantize", "--checkpoint", ckpt, "--method", "rtn", "--bits", "4"]
    argv += ["--out", str(tmp_path / "q"), "--record", str(tmp_path / "q.json")]
    err = _one_line(capsys, [*argv, "--texts", texts, "--eval-out", out])
    assert _fill(message, inputs) in err
    flag = _fill(message, inputs).replace("--texts", "--calibration")
    assert flag in _one_line(capsys, [*argv, "--calibration", texts])
    # qid cells (a checkpoint's job) checks its texts and calibration before its 16-bit eval
    monkeypatch.chdir(tmp_path)
    argv = ["cells", "--suite", "s", "--size", "h64-l2", "--step", "10", "--checkpoint", ckpt]
    argv += ["--cells", "gptq:4", "--options", '{"gptq": {"group_size": 32}}']
    good = str(inputs["texts"])
    assert _fill(message, inputs) in _one_line(capsys, [*argv, "--texts", texts])
    assert flag in _one_line(capsys, [*argv, "--texts", good, "--calibration", texts])


def test_a_table_that_is_not_parquet_is_one_line(tmp_path, capsys):
    table = tmp_path / "qid.parquet"
    table.write_text("not a table")
    err = _one_line(capsys, ["fit", "--table", str(table), "--out", str(tmp_path / "f.json")])
    assert f"--table '{table}' is not a parquet file (Parquet magic bytes not found" in err


def test_tables_reach_arrow_as_paths_not_python_files(tmp_path, monkeypatch, capsys):
    """The cause of `qid fit`'s exit 134 on errors: pandas hands Arrow a Python file object, and
    an Arrow thread releasing its buffers after the interpreter began to exit aborts (see
    qid.data.read_table). Every parquet qid reads must reach Arrow as a path."""
    import pyarrow.parquet as pq

    sources = []
    for name in ("read_table", "ParquetFile"):
        real = getattr(pq, name)

        def spy(source, *args, _real=real, **kwargs):
            sources.append(source)
            return _real(source, *args, **kwargs)

        monkeypatch.setattr(pq, name, spy)
    table = tmp_path / "t.parquet"
    pd.DataFrame({"qid": [0.1]}).to_parquet(table)
    _one_line(capsys, ["fit", "--table", str(table), "--out", str(tmp_path / "f.json")])
    texts = tmp_path / "texts.parquet"
    pd.DataFrame({"text": TEXTS}).to_parquet(texts)
    from qid.data import read_texts

    assert read_texts(texts) == TEXTS
    assert sources and all(isinstance(s, str) for s in sources), sources


def test_fit_errors_exit_1_every_time(tmp_path):
    """`qid fit` on a table it refuses, in parallel processes (the abort was a race, rarer on an
    idle machine): every exit is the error's 1, none 134 (SIGABRT)."""
    table = tmp_path / "t.parquet"
    pd.DataFrame({"qid": [0.1]}).to_parquet(table)
    cmd = [sys.executable, "-m", "qid.cli", "fit", "--table", str(table)]
    runs = [
        subprocess.Popen([*cmd, "--out", str(tmp_path / f"{i}.json")], stderr=subprocess.PIPE)
        for i in range(8)
    ]
    errors = [run.communicate(timeout=300)[1].decode() for run in runs]
    assert [run.returncode for run in runs] == [1] * len(runs), errors
    for err in errors:
        assert err.startswith("qid fit: error: table lacks column(s)") and err.count("\n") == 1


RTN = {"group_size": 32}


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_checkpoints_and_quantized_models_respect_the_umask(tiny_checkpoint, tmp_path, umask):
    """safetensors writes weights 0600 whatever the umask: a team could not read the results."""
    import transformers

    from qid.checkpoints import save
    from qid.quantize import quantize_cell

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_checkpoint)
    saved = os.umask(umask)
    try:
        save(model, tokenizer, tmp_path / "ckpt", {"step": 10})
        quantize_cell(tiny_checkpoint, tmp_path / "q", tmp_path / "q.json", "rtn", 4, RTN, None)
    finally:
        os.umask(saved)
    for root in (tmp_path / "ckpt", tmp_path / "q"):
        modes = _modes(root)
        assert "model.safetensors" in modes
        assert modes == {name: (0o777 if name == "." else 0o666) & ~umask for name in modes}, root


def test_gptq_leaves_no_log_file_in_logs_and_shares_its_files(tiny_checkpoint, tmp_path):
    """GPTQModel writes a log file per quantization into ./logs, the workflow's log directory;
    and its weights, 0600 by safetensors, get the umask's mode (here 002: 0664)."""
    pytest.importorskip("gptqmodel")
    calibration = tmp_path / "calibration.parquet"
    pd.DataFrame({"text": TEXTS}).to_parquet(calibration)
    cmd = [sys.executable, "-m", "qid.cli", "quantize", "--checkpoint", str(tiny_checkpoint)]
    cmd += ["--method", "gptq", "--bits", "4", "--out", "q", "--record", "q.json"]
    cmd += ["--calibration", str(calibration), "--threads", "2"]
    cmd += ["--options", json.dumps({"group_size": 32, "damp_percent": 0.05})]
    proc = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, umask=0o002
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "logs").exists()
    modes = _modes(tmp_path / "q")
    assert any(name.endswith(".safetensors") for name in modes)
    assert modes == {name: 0o775 if name == "." else 0o664 for name in modes}
