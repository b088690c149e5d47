"""The default study's speed levers (issue 14) that change what runs, not only how fast: mixed
precision training (`training.precision`) and the order of jobs (`grid.size_priority`)."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from test_schedule import DEFAULT, ROOT, _digest, _train

from qid import grid
from qid.config import ConfigError, check_config


def test_bf16_trains_in_mixed_precision_and_records_it(tmp_path, tokenizer):
    log32, fp32 = _train(tmp_path / "a", tokenizer, precision="fp32")
    _, absent = _train(tmp_path / "b", tokenizer)
    log16, bf16 = _train(tmp_path / "c", tokenizer, precision="bf16")
    # Written or absent, fp32 trains the same weights bit for bit (older configs train as before).
    assert _digest(fp32 / "step12") == _digest(absent / "step12") != _digest(bf16 / "step12")
    meta = json.loads((bf16 / "step12" / "qid_checkpoint.json").read_text())
    assert meta["precision"] == "bf16"
    assert (
        json.loads((absent / "step12" / "qid_checkpoint.json").read_text())["precision"] == "fp32"
    )
    # bf16 matmuls change the losses by rounding, not by kind: the same curve within 1%.
    assert (log16.loss / log32.loss - 1).abs().max() < 0.01
    weights = (bf16 / "step12" / "config.json").read_text()
    assert '"float32"' in weights  # the saved model is fp32: autocast leaves the weights alone


def test_a_precision_that_is_not_offered_is_named():
    config = copy.deepcopy(DEFAULT)
    config["suites"]["neox-sotu"]["training"]["precision"] = "fp16"
    with pytest.raises(ConfigError, match=r"training.precision"):
        check_config(config)


def test_the_largest_size_has_the_highest_priority():
    config = check_config(copy.deepcopy(DEFAULT))
    sizes = config["suites"]["neox-sotu"]["sizes"]
    priority = {s: grid.size_priority(config, "neox-sotu", s) for s in sizes}
    assert sorted(priority, key=priority.get) == ["h64-l2", "h128-l4", "h256-l4"]
    # h256-l4: 4 layers x (4 + 8) x 256^2 weights in the blocks, plus a 4,096 x 256 head.
    assert priority["h256-l4"] == pytest.approx((4 * 12 * 256**2 + 4096 * 256) / 1e6)
    # Every training job before any evaluation: the smallest model's training outranks the
    # largest model's checkpoint jobs.
    assert grid.size_priority(config, "neox-sotu", "h64-l2", training=True) > priority["h256-l4"]


def test_a_hub_size_is_ordered_by_its_n_params_or_not_at_all():
    pythia = yaml.safe_load((ROOT / "config" / "pythia.yaml").read_text())
    suite = next(s for s, spec in pythia["suites"].items() if "1b" in spec["sizes"])
    assert grid.size_priority(pythia, suite, "1b") == pytest.approx(805.736448)
    assert grid.size_priority(pythia, suite, "160m") == pytest.approx(85.056)
    pythia["suites"][suite]["sizes"]["1b"].pop("n_params")
    assert grid.size_priority(pythia, suite, "1b") == 0
