import copy
from pathlib import Path

import pytest
import yaml

from qid.config import ConfigError, check_config, load_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def broken(edit) -> dict:
    config = copy.deepcopy(DEFAULT)
    edit(config)
    return config


def test_shipped_configs_are_valid():
    check_config(copy.deepcopy(DEFAULT))
    load_config(ROOT / "tests" / "micro" / "config.yaml")


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
    ],
)
def test_bad_config_gets_one_line_naming_the_culprit(edit, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_config(broken(edit))
    assert "\n" not in str(err.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
