import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TEXTS

from qid import grid
from qid.cli import main, parser
from qid.laws import UnifiedLaw

STAGES = [
    "corpus",
    "evalset",
    "calibration",
    "data",
    "train",
    "quantize",
    "cells",
    "evaluate",
    "aggregate",
    "fit",
    "figures",
]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args([stage, "--help"])
    assert exit_.value.code == 0
    assert f"qid {stage}" in capsys.readouterr().out


def test_fit_works_on_any_table_with_the_columns(tmp_path, capsys):
    law = UnifiedLaw(k=0.03, alpha=0.25, beta=0.5, gamma=5.0)
    rng = np.random.default_rng(1)
    rows = [
        {"n_params": n, "tokens": d, "bits": b, "qid": law.qid(n, d, b) * rng.lognormal(0, 0.03)}
        for n in (1e6, 1e7, 1e8)
        for d in (1e9, 1e10, 1e11, 1e12)
        for b in (2, 3, 4)
    ]
    rows.append({"n_params": 1e6, "tokens": 1e9, "bits": 8, "qid": -0.001})
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    fit = ["fit", "--table", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "f.json")]
    with pytest.raises(SystemExit):  # the default likelihood needs each cell's qid_se
        main(fit)
    assert "qid_se column (or: --likelihood log)" in capsys.readouterr().err
    main([*fit, "--likelihood", "log"])
    fits = json.loads((tmp_path / "f.json").read_text())
    assert set(fits) >= {"unified", "tokens", "size", "bits"}
    assert fits["unified"]["n_excluded"] == 1 and fits["unified"]["n_points"] == 36
    assert fits["unified"]["params"]["gamma"]["value"] == pytest.approx(5.0, abs=0.1)


def test_a_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    pd.DataFrame({"qid": [0.1]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--table", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "f.json")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("qid fit: error: table lacks column(s) tokens, n_params, bits")
    assert err.count("\n") == 1
    assert not (tmp_path / "f.json").exists()


def test_quantize_names_an_unsupported_bit_width(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "quantize",
                "--checkpoint",
                str(tiny_checkpoint),
                "--method",
                "bnb_nf4",
                "--bits",
                "3",
                "--out",
                str(tmp_path / "q"),
                "--record",
                str(tmp_path / "q.json"),
            ]
        )
    assert "method 'bnb_nf4' does not support 3-bit weights" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def _cells_args(checkpoint, texts, cells: str) -> list[str]:
    options = {"rtn": {"group_size": 32}, "bnb_nf4": {}}
    return [
        "cells",
        *("--suite", "t", "--size", "h64-l2", "--step", "10"),
        *("--checkpoint", str(checkpoint), "--cells", cells),
        *("--options", json.dumps(options), "--texts", str(texts), "--context", "32"),
    ]


def test_cells_of_a_checkpoint_equal_the_per_cell_commands(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    texts = tmp_path / "heldout.parquet"
    pd.DataFrame({"text": TEXTS[:12]}).to_parquet(texts)
    main(_cells_args(tiny_checkpoint, texts, "rtn:2,rtn:4"))
    ckpt = grid.Checkpoint("t", "h64-l2", 10)
    base = json.loads(Path(ckpt.eval_path(grid.BASE, "heldout")).read_text())
    assert base["variant"] == grid.BASE
    for bits in (2, 4):
        cell = grid.Cell(ckpt, "rtn", bits)
        batched = json.loads(Path(cell.eval_path("heldout")).read_text())
        assert json.loads(Path(cell.record).read_text())["bits"] == bits
        # The same cell by the per-cell commands the `execution.per_job: cell` rules run.
        alone = tmp_path / f"alone{bits}"
        main(
            [
                "quantize",
                *("--checkpoint", str(tiny_checkpoint), "--method", "rtn", "--bits", str(bits)),
                *("--out", str(alone), "--record", f"{alone}.json"),
                *("--options", json.dumps({"group_size": 32}), "--texts", str(texts)),
                *("--eval-out", f"{alone}/heldout.json", "--context", "32"),
            ]
        )
        single = json.loads((alone / "heldout.json").read_text())
        assert batched["nll_per_text"] == single["nll_per_text"]
        assert batched["loss"] != base["loss"]


def test_cells_of_several_steps_equal_one_job_per_step(tiny_checkpoint, tmp_path, monkeypatch):
    """`execution.per_job: size`: one process runs each step's job in turn, with the results
    (and the paths) of one job per checkpoint."""
    texts = tmp_path / "heldout.parquet"
    pd.DataFrame({"text": TEXTS[:8]}).to_parquet(texts)
    losses = {}
    for run, steps in {"together": ["10,20"], "apart": ["10", "20"]}.items():
        workdir = tmp_path / run
        for step in (10, 20):  # the grid's checkpoint paths, where a size's job finds them
            target = workdir / grid.Checkpoint("t", "h64-l2", step).path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(tiny_checkpoint)
        monkeypatch.chdir(workdir)
        for step in steps:
            args = _cells_args(tiny_checkpoint, texts, "rtn:2")
            args[args.index("--step") + 1] = step
            del args[args.index("--checkpoint") : args.index("--checkpoint") + 2]
            main(args)
        losses[run] = {
            step: json.loads(
                Path(
                    grid.Cell(grid.Checkpoint("t", "h64-l2", step), "rtn", 2).eval_path("heldout")
                ).read_text()
            )["nll_per_text"]
            for step in (10, 20)
        }
    assert losses["together"] == losses["apart"]


def test_cells_refuses_one_checkpoint_for_several_steps(tiny_checkpoint, tmp_path, capsys):
    args = _cells_args(tiny_checkpoint, tmp_path / "t.parquet", "rtn:2")
    args[args.index("--step") + 1] = "10,20"
    with pytest.raises(SystemExit):
        main(args)
    assert "--checkpoint names one checkpoint; give one --step with it" in capsys.readouterr().err


def test_cells_checks_every_cell_before_any_work(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    texts = tmp_path / "heldout.parquet"
    pd.DataFrame({"text": TEXTS[:4]}).to_parquet(texts)
    with pytest.raises(SystemExit):
        main(_cells_args(tiny_checkpoint, texts, "rtn:2,bnb_nf4:3"))
    assert "method 'bnb_nf4' does not support 3-bit weights" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_grid_estimates_jobs_disk_and_gpu_hours(tmp_path, capsys):
    import yaml

    config = yaml.safe_load((Path(__file__).parent / "micro" / "config.yaml").read_text())
    config["suites"] = {
        "p": {
            "source": "hub",
            "repo": "Org/p-{size}",
            "tokens_per_step": 10,
            "sizes": {"s": {"n_params": 100, "total_params": 150}},
            "steps": [1, 2],
        }
    }
    config.pop("bitnet", None)
    config["methods"] = {"gptq": {"bits": [2, 4]}, "rtn": {"bits": [3]}}
    config["fit"]["method"] = "gptq"
    config["execution"] = {"per_job": "cell"}
    config["resources"] = {"gpu": 2, "sizes": {"s": {"mem_mb": 1, "runtime": 30}}}
    e = grid.estimate(config)
    cells = 2 * 3  # steps x (method, bits)
    assert (e["checkpoints"], e["cells"], e["gpu_jobs"]) == (2, cells, 2 * (3 + 1))
    assert e["evaluations"] == 2 * (3 + 1) * len(config["eval_sets"])
    assert e["checkpoint_bytes"] == 2 * 2 * 150
    assert e["quantized_bytes"] == 2 * sum(b / 8 * 100 + 2 * 50 for b in (2, 4, 3))
    assert e["gpu_hours"] == 2 * (3 + 1) * 0.5 * 2  # jobs x hours x GPUs
    per = {cut: grid.estimate({**config, "execution": {"per_job": cut}})["gpu_jobs"]
           for cut in ("checkpoint", "size")}  # fmt: skip
    assert per == {"checkpoint": 2, "size": 1}  # one size, two steps
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["grid", "--configfile", str(path)])
    out = capsys.readouterr().out
    assert "2 checkpoints, 6 cells" in out and "GPU-hours requested" in out


def test_cells_names_a_malformed_cell_list(capsys):
    with pytest.raises(SystemExit):
        main(["cells", "--suite", "s", "--size", "z", "--step", "1", "--cells", "rtn2"]
             + ["--options", "{}"])  # fmt: skip
    assert "'rtn2': expected method:bits,method:bits" in capsys.readouterr().err
