#!/usr/bin/env bash
# Run by snakemake (--sdm conda) inside the freshly created environment, once: install the
# `reprogrid` command from this repository without touching the pinned dependencies.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python -m pip install --no-deps --no-build-isolation -e "$repo"
