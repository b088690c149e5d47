"""The arguments the rules pass to the qid CLI: the same for the same config, whatever its key
order (they are Snakemake's rerun trigger), and shell-safe."""

from __future__ import annotations

import json
import shlex

from qid import rule_args as ra

CONFIG = {
    "seed": 3,
    "data": {"corpus": "sotu", "heldout_fraction": 0.1, "calibration": {"length": 16}},
    "methods": {"rtn": {"bits": [4, 2], "group_size": 32}, "gptq": {"bits": [3], "threads": 2}},
    "suites": {"s": {"training": {"lr": 1.0, "context": 8}}},
    "bitnet": {"suite": "s", "sizes": ["x"], "training": {"lr": 2.0}},
    "evaluate": {"context": 128, "batch_tokens": 2048},
    "fit": {"method": "rtn", "eval_set": "a"},
}


def test_a_config_block_is_one_shell_word_of_sorted_json():
    arg = ra.as_arg({"b": "it's", "a": [1, 2]})
    assert shlex.split(arg) == ['{"a":[1,2],"b":"it\'s"}']
    assert arg == ra.as_arg(dict(reversed({"b": "it's", "a": [1, 2]}.items())))


def test_a_suites_cells_and_options_follow_the_canonical_order():
    assert ra.suite_cells(CONFIG, "s") == "gptq:3,rtn:2,rtn:4"
    options = json.loads(shlex.split(ra.suite_options(CONFIG, "s"))[0])
    assert options == {
        "gptq": {"calibration_length": 16},
        "rtn": {"calibration_length": 16, "group_size": 32},
    }


def test_rule_ids_and_eval_io():
    assert ra.rule_id("pythia-deduped.v2") == "pythia_deduped_v2"
    assert ra.eval_io(["a.parquet", "b.parquet"]) == "--texts a.parquet --texts b.parquet"
    assert ra.eval_io(["a.parquet"], ["a.json"], "out") == "--texts a.parquet --out a.json"


def test_evaluation_settings_name_only_what_is_set():
    assert ra.eval_settings(CONFIG) == "--context 128 --batch-tokens 2048 --dtype auto"
    ev = {**CONFIG["evaluate"], "fake_quant": True, "reference_tokenizer": "a b", "dtype": "fp32"}
    assert ra.eval_settings({**CONFIG, "evaluate": ev}) == (
        "--context 128 --batch-tokens 2048 --dtype fp32 --fake-quant --reference-tokenizer 'a b'"
    )


def test_only_sets_from_the_corpus_split_depend_on_its_settings():
    data = """--data '{"corpus":"sotu","heldout_fraction":0.1}'"""
    assert ra.corpus_arg(CONFIG, {"source": "heldout"}) == data
    assert ra.corpus_arg(CONFIG, {"n_samples": 2}) == data  # calibration: the corpus by default
    assert ra.corpus_arg(CONFIG, {"source": "wiki_offline"}) == ""
    assert ra.source_files({"source": "file", "path": "t.txt"}) == ["t.txt"]
    assert ra.source_files({"source": "heldout"}) == []


def test_fit_options_and_bitnet_recipe():
    assert ra.fit_options(CONFIG) == (
        "--confidence 0.95 --loss linear --bootstrap 1000 --seed 3 --validate  --likelihood se"
    )
    fit = {**CONFIG["fit"], "validate": False, "weighted": False}
    assert ra.fit_options({**CONFIG, "fit": fit}).endswith("--seed 3  --unweighted --likelihood se")
    assert ra.bitnet_training(CONFIG, "s") == {"lr": 2.0, "context": 8}


def test_a_cell_outside_the_grid_is_named_with_its_fix():
    assert ra.not_in_grid(CONFIG, "s", "rtn-5bit").startswith("cell rtn-5bit is not in the grid")
    assert "configure rtn with 5 bits under `methods`" in ra.not_in_grid(CONFIG, "s", "rtn-5bit")
    assert (
        ra.not_in_grid(CONFIG, "s", "junk") == "'junk' is not a cell: expected <method>-<bits>bit"
    )
    assert "nope" in ra.not_in_grid(CONFIG, "s", "nope-4bit")  # an unknown method is named


def test_figure_args_pass_the_other_tables_by_key():
    args = {"table": "q.parquet", "fits": "f.json", "train": ["a.parquet", "b.parquet"]}
    assert ra.figure_args(args) == (
        "--table q.parquet --fits f.json --data train=a.parquet --data train=b.parquet"
    )
