import re

import pytest

from qid import grid


def test_a_variant_name_parses_back_to_its_cell():
    cell = grid.Cell(grid.Checkpoint("s", "z", 8), "bnb_nf4", 4)
    assert cell.variant == grid.variant("bnb_nf4", 4) == "bnb_nf4-4bit"
    assert grid.parse_variant(cell.variant) == ("bnb_nf4", 4)
    assert grid.parse_variant(grid.BASE) is None and grid.parse_variant("rtn-bit") is None


# A grid small enough to read: one trained suite (with a BitNet twin) and one hub suite.
CONFIG = {
    "seed": 0,
    "data": {"calibration": {"length": 16}},
    "eval_sets": {"a": {}, "b": {}},
    "methods": {"rtn": {"bits": [4, 2]}, "gptq": {"bits": [3], "threads": 4}},
    "suites": {
        "t": {"source": "train", "sizes": {"s": {}, "m": {}}, "steps": [1, 2]},
        "h": {"source": "hub", "keep": False, "sizes": {"x": {}}, "steps": [7], "methods": ["rtn"]},
    },
    "bitnet": {"suite": "t", "sizes": ["s"]},
}


def test_every_evaluation_of_the_grid_is_listed_once():
    evals = grid.evaluations(CONFIG)
    # checkpoints x (16-bit + cells) x eval sets: t has 2x2 x (1+3) x 2, h has 1 x (1+2) x 2
    assert len(evals) == len(set(evals)) == 4 * 4 * 2 + 3 * 2 and evals == sorted(evals)
    ckpt = grid.Checkpoint("h", "x", 7)
    assert grid.checkpoint_evaluations(CONFIG, ckpt) == [
        ckpt.eval_path(grid.BASE, "a"),
        ckpt.eval_path(grid.BASE, "b"),
        *(grid.Cell(ckpt, "rtn", b).eval_path(e) for b in (2, 4) for e in "ab"),
    ]
    assert set(grid.checkpoint_evaluations(CONFIG, ckpt)) <= set(evals)


def test_only_hub_revisions_not_kept_are_released():
    assert grid.released(CONFIG) == ["results/h/released/x/step7.json"]
    kept = {**CONFIG, "suites": {"h": {**CONFIG["suites"]["h"], "keep": True}}}
    assert grid.released(kept) == [] and grid.trained_suites(CONFIG) == ["t"]


def test_a_checkpoints_cells_chain_in_canonical_order():
    ckpt = grid.Checkpoint("t", "s", 1)
    order = [(m, b) for m, b in grid.suite_variants(CONFIG, "t")]
    assert order == [("gptq", 3), ("rtn", 2), ("rtn", 4)]
    assert grid.previous_cell(CONFIG, grid.Cell(ckpt, "gptq", 3)) is None
    assert grid.previous_cell(CONFIG, grid.Cell(ckpt, "rtn", 4)) == grid.Cell(ckpt, "rtn", 2)
    assert grid.suite_threads(CONFIG, "t") == 4 and grid.suite_threads(CONFIG, "h") == 1


def test_the_other_variant_pattern_matches_only_cells_outside_the_grid():
    # As Snakemake uses it: the `{other}` wildcard of an eval path, followed by `/{eval_set}`.
    path = re.compile(grid.other_variant(CONFIG) + r"/[^/]+\.json")
    for name in ("base", "rtn-2bit", "rtn-4bit", "gptq-3bit"):
        assert path.fullmatch(f"{name}/a.json") is None, name
    assert path.fullmatch("rtn-3bit/a.json") and path.fullmatch("awq-4bit/a.json")


def test_bitnet_twins_paths_and_refusals():
    assert grid.bitnet_evals(CONFIG) == [
        "results/t/bitnet/eval/s/step2/a.json",
        "results/t/bitnet/eval/s/step2/b.json",
    ]
    assert grid.bitnet_train_logs(CONFIG) == [
        "results/t/bitnet/train/s.parquet",
        "results/t/train/s.parquet",
    ]
    assert grid.bitnet_size(CONFIG, "t", "s") == {}
    with pytest.raises(ValueError, match="no BitNet twin of t/m"):
        grid.bitnet_size(CONFIG, "t", "m")
    without = {k: v for k, v in CONFIG.items() if k != "bitnet"}
    assert grid.bitnet_evals(without) == grid.bitnet_train_logs(without) == []


def test_the_figures_other_tables_come_from_trained_suites_only():
    assert grid.figure_data(CONFIG) == {
        "weight_changes": ["results/t/weights/changes.parquet"],
        "weight_samples": ["results/t/weights/samples.parquet"],
        "train": grid.bitnet_train_logs(CONFIG),
    }


def test_every_job_logs_to_its_own_file_under_logs():
    assert all(p.startswith("logs/") and p.endswith(".log") for p in grid.LOGS.values())
    assert len(set(grid.LOGS.values())) == len(grid.LOGS)
