"""The rules' input and output functions (qid.rule_io), called as Snakemake calls them: with a
job's wildcards. A wildcard outside the config is refused in one line naming it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from snakemake.exceptions import WorkflowError

from qid import grid
from qid.rule_io import RuleIO, calibration_arg, checkpoint_path

CONFIG = {
    "eval_sets": {"a": {"source": "heldout"}, "b": {"source": "wiki_offline"}},
    "methods": {"rtn": {"bits": [2, 4]}, "gptq": {"bits": [3]}},
    "suites": {
        "t": {"source": "train", "sizes": {"s": {"hidden_size": 8}}, "steps": [1, 2]},
        "h": {"source": "hub", "keep": False, "sizes": {"x": {}}, "steps": [7], "methods": ["rtn"]},
    },
    "bitnet": {"suite": "t", "sizes": ["s"]},
    "execution": {"keep_quantized": False, "group": True},
}


def job(**wildcards):
    return SimpleNamespace(**wildcards)


def test_a_checkpoint_waits_for_its_training_or_its_fetch():
    io = RuleIO(CONFIG)
    assert io.checkpoint_input(job(suite="t", size="s", step="2")) == "results/t/checkpoints/s"
    hub = job(suite="h", size="x", step="7")
    assert io.checkpoint_input(hub) == checkpoint_path(hub) == "results/h/checkpoints/x/step7"
    with pytest.raises(WorkflowError, match="no suite/size t/m in the config"):
        io.checkpoint_input(job(suite="t", size="m", step="1"))
    with pytest.raises(WorkflowError, match=r"step 3 is not a checkpoint of suite t \(steps"):
        io.checkpoint_input(job(suite="t", size="s", step="3"))


def test_a_cell_needs_its_checkpoint_texts_base_evals_calibration_and_previous_cell():
    io = RuleIO(CONFIG)
    gptq = io.cell_inputs(job(suite="t", size="s", step="1", method="gptq", bits="3"))
    assert gptq["calibration"] == grid.CALIBRATION and gptq["previous"] == []
    assert gptq["texts"] == ["results/data/eval/a.parquet", "results/data/eval/b.parquet"]
    assert gptq["base"] == io.base_evals(job(suite="t", size="s", step="1"))
    rtn = io.cell_inputs(job(suite="t", size="s", step="1", method="rtn", bits="4"))
    assert (
        "calibration" not in rtn and rtn["previous"] == "results/t/quantized/s/step1/rtn-2bit.json"
    )
    ungrouped = RuleIO({**CONFIG, "execution": {"keep_quantized": True, "group": False}})
    assert "previous" not in ungrouped.cell_inputs(
        job(suite="t", size="s", step="1", method="rtn", bits="4")
    )


def test_a_checkpoint_job_writes_every_cell_at_the_per_cell_paths():
    outputs = RuleIO(CONFIG).checkpoint_job_outputs("h")
    assert set(outputs) == {"base", "records", "evals"}  # no models unless keep_quantized
    assert list(outputs["records"]) == [
        "results/{suite}/quantized/{size}/step{step}/rtn-2bit.json",
        "results/{suite}/quantized/{size}/step{step}/rtn-4bit.json",
    ]
    assert len(outputs["evals"]) == 2 * 2 and len(outputs["base"]) == 2
    kept = RuleIO({**CONFIG, "execution": {"keep_quantized": True, "group": False}})
    assert len(kept.checkpoint_job_outputs("h")["models"]) == 2


def test_refusals_name_the_culprit():
    io = RuleIO(CONFIG)
    with pytest.raises(WorkflowError, match="cell rtn-3bit is not in the grid of suite t"):
        io.outside_grid(job(suite="t", other="rtn-3bit"))
    with pytest.raises(WorkflowError, match=r"no eval set 'c' in the config \(eval sets: a, b\)"):
        io.eval_set_spec(job(eval_set="c"))
    assert io.eval_set_spec(job(eval_set="b")) == {"source": "wiki_offline"}
    assert io.bitnet_size(job(suite="t", size="s")) == {"hidden_size": 8}
    with pytest.raises(WorkflowError, match="no BitNet twin of h/x"):
        io.bitnet_size(job(suite="h", size="x"))
    with pytest.raises(WorkflowError, match="does not support 99-bit weights"):
        io.cell_inputs(job(suite="t", size="s", step="1", method="rtn", bits="99"))


def test_the_calibration_argument_follows_the_inputs():
    with_calibration = SimpleNamespace(calibration="c.parquet", keys=lambda: ["calibration"])
    assert calibration_arg(None, with_calibration) == "--calibration c.parquet"
    assert calibration_arg(None, SimpleNamespace(keys=lambda: ["texts"])) == ""
