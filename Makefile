# Two entry points for a fresh machine:  make run  (set up + default study)  and  make test  (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup run test test-fast dryrun clean lint

setup: $(VENV)/.installed

$(VENV)/.installed: envs/requirements.lock pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-deps -r envs/requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

run: setup  ## the default study, end to end (configs/config.yaml)
	$(VENV)/bin/snakemake --cores $(CORES)

dryrun: setup
	$(VENV)/bin/snakemake -n --cores $(CORES)

test: setup  ## the whole test suite (what CI runs)
	$(PY) -m pytest -q

test-fast: setup  ## unit tests only (no real model, no SLURM)
	$(PY) -m pytest -q -m "not workflow and not slurm"

lint: setup
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results .snakemake
