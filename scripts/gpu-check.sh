#!/usr/bin/env bash
# The `gpu` test tier (tests/test_gpu_tier.py and every other test marked gpu) on a machine with an NVIDIA GPU,
# CUDA and PyTorch and no network, in under 8 minutes.
#
#   scripts/gpu-check.sh fetch   # here, where the package index is reachable: wheels of what a bare CUDA+PyTorch
#                                # image lacks (lm-eval, snakemake, transformers at our pin, their small
#                                # dependencies) into .whl/ (git-ignored through .git/info/exclude), for CPython 3.12
#   scripts/gpu-check.sh run     # there, in a copy of this checkout with .whl/: installs them into /tmp/site
#                                # (nothing outside /tmp is touched) and runs `pytest -m gpu`; the log goes to
#                                # ${OUT:-.}/gpu-check.log and the exit code is pytest's
#
# The wheels are the pins of envs/requirements.lock minus torch, the CUDA libraries and what the image already
# has (IMAGE below: names seen on this workplace's CUDA image; a package there at another version is carried
# when our pin differs only if it is in ALWAYS). Nothing is downloaded on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
PYVER=${GPU_PYTHON_VERSION:-3.12}
# on the CUDA image already (pip list there); kept as they are
IMAGE="absl-py accelerate aiohappyeyeballs aiohttp aiosignal anyio attrs certifi charset-normalizer click cloudpickle
filelock frozenlist fsspec h11 hf-xet httpcore httpx huggingface-hub idna jinja2 joblib markupsafe mpmath multidict
networkx numpy packaging pandas pillow pip pluggy portalocker propcache protobuf psutil pyarrow pygments pytest
pytest-timeout python-dateutil pyyaml regex requests rich sacrebleu safetensors scikit-learn scipy setuptools six
statsmodels patsy sympy tabulate threadpoolctl tokenizers tqdm typing-extensions urllib3 wrapt xxhash yarl zipp
matplotlib contourpy cycler fonttools kiwisolver pyparsing iniconfig peft colorama lxml"
# carried even though the image has a version: the code pins these
ALWAYS="transformers tokenizers huggingface-hub"
SKIP_RE='^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|llama-cpp-python)$'

norm() { echo "$1" | tr '[:upper:]_.' '[:lower:]--'; }

fetch() {
  local exclude; exclude="$(git rev-parse --git-common-dir)/info/exclude"
  grep -qxF "/$WHEELS/" "$exclude" 2>/dev/null || echo "/$WHEELS/" >> "$exclude"
  mkdir -p "$WHEELS"
  local pins=()
  while IFS= read -r line; do
    [[ "$line" =~ ^([A-Za-z0-9_.-]+)==([^[:space:]]+)$ ]] || continue
    local name; name=$(norm "${BASH_REMATCH[1]}")
    [[ "$name" =~ $SKIP_RE ]] && continue
    if [[ " $(norm "$IMAGE") " == *" $name "* ]] && [[ " $ALWAYS " != *" $name "* ]]; then continue; fi
    pins+=("${BASH_REMATCH[1]}==${BASH_REMATCH[2]%%+*}")
  done < envs/requirements.lock
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$WHEELS" "${pins[@]}"
  du -sh "$WHEELS"
  echo "carry $WHEELS to the GPU machine with this checkout, then: scripts/gpu-check.sh run"
}

run() {
  local out=${OUT:-.}/gpu-check.log
  python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src PATH=/tmp/site/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch, transformers, lm_eval; print('torch', torch.__version__, 'transformers', transformers.__version__, 'lm_eval', lm_eval.__version__)"
  } 2>&1 | tee "$out"
  set +e
  timeout 470 python3 -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tee -a "$out"
  local rc=${PIPESTATUS[0]}
  echo "gpu-check: pytest exit code $rc" | tee -a "$out"
  exit "$rc"
}

case "${1:-}" in
  fetch) fetch ;;
  run) run ;;
  *) echo "usage: scripts/gpu-check.sh fetch|run" >&2; exit 2 ;;
esac
