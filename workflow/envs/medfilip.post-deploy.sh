#!/usr/bin/env bash
# Snakemake runs this inside the env of medfilip.yaml right after creating it, from a copy in the
# conda prefix (<prefix>/<hash>.post-deploy.sh), in the working directory (--directory): neither
# is the checkout. The workflow exports MEDFILIP_SOURCE_DIR (the folder holding workflow/, set in
# workflow/rules/common.smk from the Snakefile's own base directory), so this installs the
# medfilip package (the CLI the rules call) from the workflow's checkout, editable, so the env
# follows the code; its dependencies are already in medfilip.yaml.
set -euo pipefail
source_dir="${MEDFILIP_SOURCE_DIR:?MEDFILIP_SOURCE_DIR is unset: create the env through the workflow (snakemake --use-conda), which sets it to the checkout}"
if [ ! -f "$source_dir/pyproject.toml" ]; then
    echo "MEDFILIP_SOURCE_DIR=$source_dir has no pyproject.toml: not a medfilip checkout" >&2
    exit 1
fi
python -m pip install --no-deps --editable "$source_dir"
