"""The profiles as Snakemake reads them: it loads profiles/default (the workflow's own profile)
for every run and lets it override --profile, so the cluster settings must survive it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def settings(*argv: str):
    from snakemake.cli import parse_args

    cwd = os.getcwd()
    os.chdir(ROOT)  # the workflow profile is found relative to the working directory
    try:
        return parse_args([*argv, "-n"])[1]
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    "key", sorted(yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text()))
)
def test_the_cluster_profile_is_not_overridden_by_the_default_one(key):
    wanted = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())[key]
    got = getattr(settings("--profile", "profiles/slurm"), key.replace("-", "_"))
    assert got == wanted or str(got) == str(wanted) or got == [wanted], (key, got)


def test_the_local_profile_uses_every_core():
    assert settings("--profile", "profiles/default").cores == os.cpu_count()


@pytest.mark.parametrize("name", ["default", "slurm"])
def test_each_profile_is_found_by_its_name_from_the_repository_root(name):
    # Snakemake looks a bare profile name up in the working directory (then ~/.config/snakemake):
    # `default` and `slurm` are tracked relative links into profiles/, so a fresh clone has them.
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    entry = subprocess.run(
        ["git", "ls-files", "--stage", name], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert entry[0] == "120000" and os.readlink(ROOT / name) == f"profiles/{name}"
    named, by_path = settings("--profile", name), settings("--profile", f"profiles/{name}")
    plain = lambda v: vars(v) if hasattr(v, "__dict__") else v  # noqa: E731 (settings objects)
    differ = {k for k, v in vars(named).items() if plain(v) != plain(vars(by_path)[k])}
    assert differ == {"profile"}, differ  # the same settings, read from the same files
