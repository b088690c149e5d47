import copy
import re
from pathlib import Path

import pytest
import yaml

from qid.config import ConfigError, check_config, check_schema, load
from qid.quantize import METHODS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def broken(edit) -> dict:
    config = copy.deepcopy(DEFAULT)
    edit(config)
    return config


def test_shipped_configs_are_valid():
    check_config(copy.deepcopy(DEFAULT))
    load(ROOT / "tests" / "micro" / "config.yaml")


def test_awq_options_are_accepted():
    awq = {"bits": [2, 3, 4, 8], "group_size": 32, "duo_scaling": False, "n_grid": 10}
    check_config(broken(lambda c: c["methods"].update(awq=awq)))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["methods"].update(awq9={"bits": [4]}),
            r"'methods.awq9': unknown quantization method 'awq9'",
        ),
        (
            lambda c: c["methods"]["bnb_nf4"].update(bits=[3]),
            r"'methods.bnb_nf4.bits': method 'bnb_nf4' does not support 3-bit",
        ),
        (lambda c: c["methods"]["rtn"].update(bits=[1]), r"method 'rtn' does not support 1-bit"),
        (
            lambda c: c["methods"].update(awq={"bits": [4, 1], "group_size": 32}),
            r"'methods.awq.bits': method 'awq' does not support 1-bit",
        ),
        (
            lambda c: c["methods"].update(awq={"bits": [4], "n_grid": 2}),
            r"'methods.awq.n_grid': 2 is less than the minimum of 3",
        ),
        (lambda c: c.pop("evaluate"), r"'<top level>': 'evaluate' is a required property"),
        (
            lambda c: c["suites"]["neox-sotu"]["training"].pop("lr"),
            r"'suites.neox-sotu.training': 'lr' is a required property",
        ),
        (
            lambda c: c["data"].update(heldout_fracton=0.2),
            r"'data.heldout_fracton' is not allowed \(misspelled\?",
        ),
        (
            lambda c: c["methods"]["gptq"].update(groupsize=64),
            r"'methods.gptq.groupsize' is not allowed",
        ),
        (
            lambda c: c["eval_sets"]["sotu"].update(n_texts=0),
            r"'eval_sets.sotu.n_texts': 0 is less than the minimum of 1",
        ),
        (lambda c: c.update(eval_sets={}), r"'eval_sets': {} should be non-empty"),
        (lambda c: c["fit"].update(method="awq"), r"'fit.method': 'awq' is not under 'methods'"),
        (
            lambda c: c["suites"]["neox-sotu"].update(steps=[10, 5]),
            r"'suites.neox-sotu.steps' must be increasing",
        ),
        (
            lambda c: c["suites"]["neox-sotu"].update(methods=["gptq", "hqq"]),
            r"'suites.neox-sotu.methods': method 'hqq' is not configured",
        ),
        (
            lambda c: c["eval_sets"].update(rw={"source": "hf", "n_texts": 10}),
            r"'eval_sets.rw': source 'hf' needs 'dataset'",
        ),
        (
            lambda c: c["eval_sets"]["wiki"].update(split="test"),
            r"'eval_sets.wiki.split' is not used by source 'wiki_offline'",
        ),
        (
            lambda c: c["eval_sets"]["wiki"].update(dataset_name="x"),
            r"'eval_sets.wiki.dataset_name' is not allowed \(misspelled\?",
        ),
        (
            lambda c: c["eval_sets"]["wiki"].update(n_texts="some"),
            r"'eval_sets.wiki.n_texts': 'some' does not match",
        ),
        (
            lambda c: c["data"]["calibration"].update(source="heldout"),
            r"'data.calibration.source': 'heldout' is not one of",
        ),
        (
            lambda c: c["data"]["calibration"].update(n_texts=8),
            r"'data.calibration.n_texts' is not used by source 'corpus'",
        ),
        (
            lambda c: c["data"].pop("tokenizer"),
            r"'data.tokenizer' is required by suite 'neox-sotu'",
        ),
        (
            lambda c: c["execution"].update(per_job="batch"),
            r"'execution.per_job': 'batch' is not one of \['cell', 'checkpoint', 'size'\]",
        ),
        (
            lambda c: c["execution"].update(keep=True),
            r"'execution.keep' is not allowed \(misspelled\?",
        ),
        (
            lambda c: c["evaluate"].update(batch_tokens="max"),
            r"'evaluate.batch_tokens': 'max' is not valid under any of the given schemas",
        ),
        (
            lambda c: c["suites"]["neox-sotu"].update(source="hf"),
            r"'suites.neox-sotu.source': 'hf' is not one of \['train', 'hub', 'local'\]",
        ),
        (
            lambda c: c["suites"].update(p={"source": "hub", "sizes": {"a": {}}, "steps": [1]}),
            r"'suites.p.repo' is required for source hub",
        ),
        (
            lambda c: c["suites"].update(
                p={"source": "local", "path": "/m/{size}", "sizes": {"a": {}}, "steps": [1]}
            ),
            r"'suites.p.tokens_per_step' is required for source local",
        ),
        (
            lambda c: c["suites"]["neox-sotu"]["sizes"]["h64-l2"].pop("num_heads"),
            r"'suites.neox-sotu.sizes.h64-l2.num_heads' is required for source train",
        ),
        (
            lambda c: c["methods"].update(released={"bits": [8]}),
            r"'methods.released.bits': method 'released' does not support 8-bit",
        ),
        (  # the cell would be quantized and evaluated twice
            lambda c: c["methods"]["rtn"].update(bits=[2, 4, 4]),
            r"^config key 'methods.rtn.bits': bit width 4 is listed twice$",
        ),
        (
            lambda c: c["suites"]["neox-sotu"].update(methods=["rtn", "gptq", "rtn"]),
            r"^config key 'suites.neox-sotu.methods': method 'rtn' is listed twice$",
        ),
        (
            lambda c: c["bitnet"].update(sizes=["h64-l2", "h64-l2"]),
            r"^config key 'bitnet.sizes': size 'h64-l2' is listed twice$",
        ),
    ],
)
def test_bad_config_gets_one_line_naming_the_culprit(edit, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_config(broken(edit))
    assert "\n" not in str(err.value)


def test_missing_config_file_is_named(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "nope.yaml")
    assert str(err.value) == f"config file '{tmp_path / 'nope.yaml'}' not found"
    monkeypatch.chdir(tmp_path)  # a relative path: where it was looked for
    with pytest.raises(ConfigError) as err:
        load("nope.yaml")
    assert str(err.value) == f"config file 'nope.yaml' not found (working directory {tmp_path})"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "seed: 0\ndata:\n  calibration: {n_samples: 8\n  x: 1\n",
            "line 4, column 4: expected ',' or '}', but got ':' (while parsing a flow mapping "
            "at line 3, column 16)",
        ),
        ("seed: 0\n\tdata: 1\n", "line 2, column 1: found character '\\t' that cannot start"),
        ("- seed\n- data\n", "holds a list, not a mapping of config keys"),
    ],
)
def test_malformed_config_file_is_named_with_its_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"config file '{path}'")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dataset_and_file_sources_are_valid():
    # The paper's eval sets and GPTQ's Wikitext-2 calibration, as the README gives them.
    config = broken(
        lambda c: (
            c["eval_sets"].update(
                refinedweb={
                    "source": "hf",
                    "dataset": "tiiuae/falcon-refinedweb",
                    "text_column": "content",
                    "n_texts": 1000,
                },
                wikitext2={
                    "source": "hf",
                    "dataset": "Salesforce/wikitext",
                    "name": "wikitext-2-raw-v1",
                    "split": "test",
                    "join": "article",
                    "n_texts": "all",
                },
                local={
                    "source": "file",
                    "path": "texts.jsonl",
                    "text_column": "body",
                    "n_texts": 5,
                },
            ),
            c["data"]["calibration"].update(
                source="hf", dataset="Salesforce/wikitext", name="wikitext-2-raw-v1", n_texts="all"
            ),
        )
    )
    check_config(config)


def test_the_readme_source_examples_are_valid():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Eval sets and calibration")[1].split("\n### ")[0]
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    assert [sorted(b) for b in blocks] == [["eval_sets"], ["data"]]
    config = copy.deepcopy(DEFAULT)
    config["eval_sets"].update(blocks[0]["eval_sets"])
    config["data"].update(blocks[1]["data"])
    check_config(config)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["methods"]["rtn"].update(group_size=0),
            r"'methods.rtn.group_size': group size 0 is not valid",
        ),
        (
            lambda c: c["methods"]["gptq"].update(group_size=128),
            r"'methods.gptq.group_size': group size 128 is wider than the layer: layer "
            r"'attention.query_key_value' of suite 'neox-sotu' size 'h64-l2' has input width 64",
        ),
        (  # AWQ (compressed-tensors) needs whole groups; RTN and GPTQ end in a shorter one.
            lambda c: c["methods"].update(awq={"bits": [4], "group_size": 48}),
            r"'methods.awq.group_size': group size 48 does not divide its input width, which awq "
            r"requires: layer 'attention.query_key_value' of suite 'neox-sotu' size 'h64-l2'",
        ),
        (  # GPTQModel's kernel packs -1, 16, 32, ...: it would fail after calibrating
            lambda c: c["methods"]["gptq"].update(group_size=24),
            r"'methods.gptq.group_size': group size 24 cannot be packed by GPTQModel",
        ),
        (  # 3-bit GPTQ packs 32 input columns at a time
            lambda c: (
                c["methods"]["gptq"].update(bits=[3], group_size=16),
                c["suites"]["neox-sotu"]["sizes"].update(
                    h48={"hidden_size": 48, "num_layers": 1, "num_heads": 2}
                ),  # fmt: skip
            ),
            r"'methods.gptq.bits': GPTQModel packs 3-bit weights 32 input columns at a time, and "
            r"layer 'attention.query_key_value' of suite 'neox-sotu' size 'h48' has input width 48",
        ),
        (  # no group size given: the method's default (128) is checked
            lambda c: c["methods"].update(awq={"bits": [4]}),
            r"'methods.awq.group_size': group size 128 is wider than the layer",
        ),
    ],
)
def test_a_group_size_the_trained_widths_cannot_take_is_refused_at_load(edit, message):
    with pytest.raises(ConfigError, match=message):
        check_config(broken(edit))


def test_an_eval_context_beyond_a_trained_suites_positions_is_refused_at_load():
    # The suite's models have training.context positions (qid.checkpoints.model_config).
    with pytest.raises(ConfigError) as err:
        check_config(broken(lambda c: c["evaluate"].update(context=256)))
    assert str(err.value) == (
        "config key 'evaluate.context': 256 tokens is beyond the 128 positions of the models of "
        "suite 'neox-sotu' (suites.neox-sotu.training.context)"
    )
    check_config(broken(lambda c: c["evaluate"].update(context=64)))  # shorter windows: fine


def test_a_group_size_that_leaves_a_shorter_last_group_is_accepted_for_rtn():
    check_config(broken(lambda c: c["methods"]["rtn"].update(group_size=24)))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["eval_sets"]["wiki"].update(n_texts=50000),
            r"^config key 'eval_sets.wiki.n_texts': 50000 texts asked, the source 'wiki_offline' "
            r"has 9356 \(texts of >= 200 characters\)$",
        ),
        (  # the held-out speeches' paragraphs (10% of the corpus's documents)
            lambda c: c["eval_sets"]["sotu"].update(n_texts=5000),
            r"^config key 'eval_sets.sotu.n_texts': 5000 texts asked, the source 'heldout' has "
            r"\d+ \(texts of >= 200 characters\)$",
        ),
        (
            lambda c: c["eval_sets"]["wiki"].update(n_texts="all", min_chars=10**6),
            r"'eval_sets.wiki.n_texts': all texts asked, the source 'wiki_offline' has 0 ",
        ),
        (  # each window is cut from one document: numpy's ValueError at run time until now
            lambda c: c["data"]["calibration"].update(length=30000),
            r"^config key 'data.calibration.length': 30000 tokens \(240000 characters\) asked, "
            r"the longest document of source 'corpus' has \d+ characters$",
        ),
        (  # the pool of texts the windows are cut from is n_samples texts unless n_texts says
            lambda c: c["data"].update(calibration={"source": "wiki_offline", "n_samples": 20000}),
            r"^config key 'data.calibration.n_samples': 20000 texts asked, the source "
            r"'wiki_offline' has 9356",
        ),
        (
            lambda c: c["data"].update(
                calibration={"source": "wiki_offline", "n_samples": 8, "n_texts": 10**5}
            ),
            r"^config key 'data.calibration.n_texts': 100000 texts asked",
        ),
        (
            lambda c: c["data"].update(
                calibration={"source": "wiki_offline", "n_samples": 8, "length": 10**7}
            ),
            r"^config key 'data.calibration.length': 10000000 tokens \(80000000 characters\) "
            r"asked, the texts of source 'wiki_offline' hold \d+ characters in all$",
        ),
    ],
)
def test_a_sample_larger_than_its_local_source_is_refused_at_load(edit, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_config(broken(edit))
    assert "\n" not in str(err.value)


def test_a_parquet_sources_rows_are_counted_from_its_metadata(tmp_path, monkeypatch):
    import pandas as pd

    pd.DataFrame({"text": [f"text {i}" for i in range(30)]}).to_parquet(tmp_path / "t.parquet")
    monkeypatch.chdir(tmp_path)  # a file source's path is relative to the working directory
    local = {"source": "file", "path": "t.parquet", "n_texts": 30}
    check_config(broken(lambda c: c["eval_sets"].update(local=local)))
    with pytest.raises(ConfigError) as err:
        check_config(broken(lambda c: c["eval_sets"].update(local={**local, "n_texts": 31})))
    assert str(err.value) == (
        "config key 'eval_sets.local.n_texts': 31 texts asked, the source 'file' ('t.parquet') "
        "has 30 rows"
    )
    # Not cheap to count (a text file, a dataset) or not there: left to the job that reads it.
    check_config(broken(lambda c: c["eval_sets"].update(local={**local, "path": "t.txt"})))


def test_calibration_is_not_checked_when_no_method_calibrates():
    check_config(
        broken(
            lambda c: (
                c["data"]["calibration"].update(length=30000),
                c.update(methods={"rtn": {"bits": [4], "group_size": 32}}),
                c["fit"].update(method="rtn"),
            )
        )
    )


def _hub_study(calibration: dict) -> dict:
    config = yaml.safe_load((ROOT / "config" / "pythia.yaml").read_text())
    config["data"]["calibration"] = calibration
    return config


def test_calibration_defaults_to_what_the_libraries_recommend(capsys):
    config = check_config(_hub_study({"source": "wiki_offline"}))
    # gptq recommends 256 x 256 tokens, awq 256 x 512: one calibration set serves both.
    assert config["data"]["calibration"] == {"source": "wiki_offline", "n_samples": 256,
                                             "length": 512}  # fmt: skip
    assert "warning" not in capsys.readouterr().err


def test_a_small_calibration_of_real_models_gets_a_warning_naming_the_keys(capsys):
    check_config(_hub_study({"source": "wiki_offline", "n_samples": 32, "length": 128}))
    err = capsys.readouterr().err
    assert "'data.calibration.n_samples' x 'data.calibration.length': 32 x 128" in err
    assert len(err.strip().splitlines()) == 1
    check_config(copy.deepcopy(DEFAULT))  # a suite trained here: its budget is the user's call
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("method", "option", "allowed"),
    [
        ("rtn", "desc_act", "bits, group_size, quantize_head, threads"),
        ("gptq", "duo_scaling", "bits, damp_percent, desc_act, group_size, symmetric, threads"),
        ("awq", "quantize_head", "bits, duo_scaling, group_size, mappings, n_grid, threads"),
        ("bnb_nf4", "group_size", "bits, threads"),
        ("released", "group_size", "bits, cache_dir, repo, revision, threads"),
    ],
)
def test_an_option_of_another_method_is_refused_naming_the_key(method, option, allowed):
    block = {"bits": [4], option: 1}
    with pytest.raises(ConfigError) as err:
        check_config(broken(lambda c: c["methods"].update({method: block})))
    assert str(err.value) == (
        f"config key 'methods.{method}.{option}' is not allowed (misspelled? allowed here: "
        f"{allowed})"
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_option_a_method_declares_is_accepted_at_its_default(method):
    block = {"bits": [4], "threads": 2}
    block.update(
        {k: o.default for k, o in METHODS[method].options.items() if o.default is not None}
    )
    check_schema(broken(lambda c: c["methods"].update({method: block})))


def test_load_fills_the_schemas_defaults_but_not_the_methods_options():
    first = load(ROOT / "config" / "config.yaml")
    given = DEFAULT["execution"]
    assert first["execution"] == {"keep_quantized": True, "group": False, **given}
    assert first["methods"]["rtn"] == DEFAULT["methods"]["rtn"]  # the backend's defaults apply
    first["execution"]["group"] = True  # a filled default is the config's own copy
    assert load(ROOT / "config" / "config.yaml")["execution"]["group"] is False
