"""config/pythia.yaml: the paper's grid, as Snakemake plans it (a dry run: nothing is fetched)."""

from __future__ import annotations

import re

import yaml
from conftest import ROOT, snakemake

from qid import grid
from qid.config import load

PYTHIA = ROOT / "config" / "pythia.yaml"


def test_the_paper_grid_is_the_papers():
    config = load(PYTHIA)
    suite = config["suites"]["pythia"]
    assert list(suite["sizes"]) == ["160m", "410m", "1b", "2.8b", "6.9b", "12b"]
    assert len(suite["steps"]) == 20 and suite["steps"][-1] == 98000
    assert suite["tokens_per_step"] == 2097152
    assert suite["sizes"]["160m"]["n_params"] == 85056000
    assert config["methods"]["gptq"]["bits"] == [2, 3, 4]
    assert config["evaluate"]["reference_tokenizer"] == "meta-llama/Meta-Llama-3-8B"


def test_a_dry_run_lists_every_job_of_the_paper_grid(tmp_path):
    run = snakemake(tmp_path, "-n", configfile=PYTHIA)
    assert run.returncode == 0, run.stderr[-3000:]
    stats = re.search(r"Job stats:\n(.*?)\n\n", run.stdout, re.S).group(1)
    count = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M)}
    config = yaml.safe_load(PYTHIA.read_text())
    checkpoints = len(list(grid.checkpoints(config)))
    assert checkpoints == 120
    assert count["fetch_pythia"] == count["evaluate_base"] == count["release_pythia"] == checkpoints
    assert count["quantize"] == len(list(grid.cells(config))) == 120 * 8
    assert count["total"] > 720
