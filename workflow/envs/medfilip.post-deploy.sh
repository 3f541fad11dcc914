#!/usr/bin/env bash
# Snakemake runs this inside the env of medfilip.yaml right after creating it.
# Installs the medfilip package (the CLI the rules call) from this checkout, editable,
# so the env follows the code; its dependencies are already in medfilip.yaml.
set -euo pipefail
python -m pip install --no-deps --editable "$(dirname "$0")/../.."
