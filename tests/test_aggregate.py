import json

import pytest

from qid import QidError
from qid.aggregate import aggregate


def record(tmp_path, method, bits, loss, nll, eval_set="sotu", step=10, **extra):
    rec = {
        "suite": "s",
        "size": "a",
        "step": step,
        "tokens": step * 100,
        "n_params": 1000,
        "method": method,
        "bits": bits,
        "eval_set": eval_set,
        "loss": loss,
        "nll_sum": sum(nll),
        "model_tokens": 50,
        "reference_tokens": 40,
        "texts": len(nll),
        "reference_tokenizer": "own",
        "nll_per_text": nll,
        "seed": 0,
        "versions": {},
        **extra,
    }
    path = tmp_path / f"{method}-{bits}-{eval_set}-{step}.json"
    path.write_text(json.dumps(rec))
    return path


def test_qid_is_quantized_minus_16bit_loss_per_cell(tmp_path):
    paths = [
        record(tmp_path, "base", 16, 2.0, [40.0, 40.0]),
        record(tmp_path, "rtn", 2, 2.5, [50.0, 50.0]),
        record(tmp_path, "rtn", 4, 2.1, [41.0, 43.0]),
    ]
    table = aggregate(paths, config_hash="abc")
    assert list(table.bits) == [2, 4]
    assert table.qid.tolist() == pytest.approx([0.5, 0.1])
    assert (table.loss_16 == 2.0).all() and (table.config_hash == "abc").all()
    # paired standard error: differences (10, 10) -> 0; (1, 3) -> sqrt(2) * sd / ref tokens
    assert table.qid_se.tolist() == pytest.approx([0.0, 2**0.5 * 2**0.5 / 40])


def test_the_table_says_the_context_its_losses_were_measured_with(tmp_path):
    paths = [
        record(tmp_path, "base", 16, 2.0, [40.0, 40.0], context=64),
        record(tmp_path, "rtn", 2, 2.5, [50.0, 50.0], context=64),
    ]
    assert aggregate(paths).context.tolist() == [64]


def test_a_cell_measured_with_another_context_than_its_16bit_model_is_named(tmp_path):
    paths = [
        record(tmp_path, "base", 16, 2.0, [40.0, 40.0], context=64),
        record(tmp_path, "rtn", 2, 2.5, [50.0, 50.0], context=32),
    ]
    with pytest.raises(QidError, match="s/a/step10 rtn-2bit on 'sotu' .* context 32, .* 64"):
        aggregate(paths)


def test_a_cell_without_its_16bit_evaluation_is_named(tmp_path):
    paths = [
        record(tmp_path, "base", 16, 2.0, [1.0]),
        record(tmp_path, "rtn", 2, 2.5, [1.0], eval_set="wiki"),
    ]
    with pytest.raises(QidError, match="no 16-bit evaluation for s/a/step10 on eval set 'wiki'"):
        aggregate(paths)


def test_an_unreadable_result_is_named(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{")
    with pytest.raises(QidError, match="broken.json"):
        aggregate([bad])
