"""Settings that cannot work, refused by `snakemake -n` in one line before any job runs: the
config file itself, and the checks at config load as the workflow wires them."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from conftest import ROOT, snakemake

pytestmark = pytest.mark.slow
MICRO = yaml.safe_load((ROOT / "tests" / "micro" / "config.yaml").read_text())


def refused(run, line: str, workdir) -> None:
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert f"config error: {line}\n" in out, out[-2000:]
    assert not (workdir / "results").exists()


def test_a_missing_embedded_config_is_named(tmp_path):
    run = snakemake(tmp_path, "-n", configfile=None)
    refused(run, f"config file 'config/config.yaml' not found (working directory {tmp_path})",
            tmp_path)  # fmt: skip


def test_a_malformed_embedded_config_is_named_with_its_line(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("seed: 0\nmethods:\n  rtn: {bits: [2]\n")
    run = snakemake(tmp_path, "-n", configfile=None)
    refused(
        run,
        "config file 'config/config.yaml', line 4, column 1: expected ',' or '}', but got "
        "'<stream end>' (while parsing a flow mapping at line 3, column 8)",
        tmp_path,
    )


def _parquet(workdir) -> None:
    texts = [f"paragraph {i} " * 5 for i in range(12)]
    pd.DataFrame({"text": texts}).to_parquet(workdir / "texts.parquet")


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (
            lambda c: c["methods"]["rtn"].update(bits=[2, 4, 4]),
            "config key 'methods.rtn.bits': bit width 4 is listed twice",
        ),
        (
            lambda c: c["evaluate"].update(context=128),
            "config key 'evaluate.context': 128 tokens is beyond the 64 positions of the models "
            "of suite 'micro' (suites.micro.training.context)",
        ),
        (
            lambda c: c["eval_sets"]["wiki"].update(n_texts=50000),
            "config key 'eval_sets.wiki.n_texts': 50000 texts asked, the source 'wiki_offline' "
            "has 9356 (texts of >= 200 characters)",
        ),
        (  # a file source's path is relative to the working directory (--directory)
            lambda c: c["eval_sets"].update(
                own={"source": "file", "path": "texts.parquet", "n_texts": 13}
            ),
            "config key 'eval_sets.own.n_texts': 13 texts asked, the source 'file' "
            "('texts.parquet') has 12 rows",
        ),
    ],
)
def test_a_setting_that_cannot_work_is_refused_at_the_dry_run(tmp_path, edit, line):
    config = yaml.safe_load(yaml.safe_dump(MICRO))
    edit(config)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    _parquet(tmp_path)
    run = snakemake(tmp_path, "-n", configfile=tmp_path / "study.yaml")
    refused(run, line, tmp_path)


def test_the_fetch_job_is_given_the_eval_context(tmp_path):
    # A hub or local model's positions are known from its config.json only: its fetch job
    # checks them (tests/test_fetch.py), given evaluate.context by the rule.
    config = {
        **{k: MICRO[k] for k in ("seed", "data", "evaluate", "fit", "eval_sets")},
        "suites": {
            "own": {
                "source": "local",
                "path": str(tmp_path / "models/{size}/step{step}"),
                "tokens_per_step": 1000,
                "sizes": {"a": {}},
                "steps": [8],
            }
        },
        "methods": {"rtn": {"bits": [4], "group_size": 32}},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "-n", "-p", "results/own/checkpoints/a/step8",
                    configfile=tmp_path / "study.yaml")  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-2000:]
    assert f"--context {MICRO['evaluate']['context']} >" in run.stdout
