"""The config schema ships inside the package: an installed (not editable) qid validates configs."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "qid/schema/config.schema.yaml"


def test_config_schema_link_is_the_packages_schema():
    # config/ keeps the schema where users look for it, as a link to the one the package reads.
    link = ROOT / "config" / "schema" / "config.schema.yaml"
    assert link.is_symlink() and not Path(os.readlink(link)).is_absolute()
    assert link.resolve() == (ROOT / "workflow" / SCHEMA).resolve()


def test_wheel_ships_the_schema_and_qid_config_finds_it_installed(tmp_path):
    # A copy of what the wheel is built from, so that the build leaves the checkout alone.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "workflow" / "qid",
        src / "workflow" / "qid",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("qid-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert SCHEMA in archive.namelist()
        archive.extractall(tmp_path / "site")
    # The unpacked wheel first on the path, run away from the checkout: no config/ beside it.
    probe = (
        "import qid, qid.config as c; "
        "s = c.load_schema(); "
        "print(qid.__file__); print(sorted(s['properties']['methods']['properties']['rtn']"
        "['properties']))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    where, keys = run.stdout.splitlines()
    assert Path(where).is_relative_to(tmp_path / "site")
    assert keys == "['bits', 'group_size', 'quantize_head', 'threads']"
