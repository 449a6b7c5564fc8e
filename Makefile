# fmnist: every result one command away. Run `make help` for the list.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Nothing we run phones home (mlflow ui, dvc, the stages).
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := true
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup system-deps venv quick cpu full run profiles exps metrics ui test test-fast lint lock bench server server-stop ci-rehearsal sweep-rehearsal lint-workflow gpu-carry gpu-plan gpu-import

help:
	@echo "make setup    install the dataset package, a virtualenv at $(VENV) and the pinned dependencies"
	@echo "make quick    run the whole DVC pipeline on the quick budget (own MLflow experiment)"
	@echo "make run      the benchmark this machine can finish: the gpu profile with a GPU, the cpu profile without"
	@echo "make PROFILE  the whole DVC pipeline on any profile under profiles: in params.yaml (make quick, make cpu, ...)"
	@echo "make cpu      the whole DVC pipeline on the cpu profile (real results on 2 CPU cores in at most 2 hours)"
	@echo "make gpu      the whole DVC pipeline on the gpu profile (every network converged on one GPU in minutes)"
	@echo "make full     the whole DVC pipeline on the full profile (the reference recipes: hours of GPU)"
	@echo "make gpu-plan the gpu profile's parts for a lent GPU machine, with estimated times (docs/gpu.md)"
	@echo "make gpu-carry  what a lent offline GPU machine needs beside the tree: the data and missing wheels, in .gpu/"
	@echo "make gpu-import DIR=... PART=...  what a GPU command sent back, into results/gpu/PART and MLflow"
	@echo "make exps     every DVC experiment: the params that differ and the headline metrics (fmnist exps)"
	@echo "make metrics  the headline metrics of the workspace (dvc metrics show --md metrics/summary.json)"
	@echo "make notebook the walkthrough notebook run on the store, executed copy in reports/walkthrough.ipynb (docs/notebook.md)"
	@echo "make ui       mlflow ui on the store, opened on the training runs by test accuracy and their curves (PORT=5001)"
	@echo "make test     the test suite (unit tests and one end-to-end dvc repro on a tiny budget)"
	@echo "make lint     ruff (pyflakes, pycodestyle, import order, pyupgrade, bugbear) over the code and tests, hadolint over the Dockerfile"
	@echo "make profiles the profiles params.yaml defines (make PROFILE runs any of them: make quick, make cpu, ...)"
	@echo "make server   a tracking server for a team: PostgreSQL + mlflow server on 127.0.0.1:5000 (make server-stop)"
	@echo "make ci-rehearsal  play the CI retraining workflow end to end here (docs/ci.md, docs/ci_rehearsal.md)"
	@echo "make sweep-rehearsal  fmnist sweep on a loopback server: 4 workers, faults mid-sweep, 1/2/4-worker wall times (docs/scale.md, ~15 min)"
	@echo "make lint-workflow  check .github/workflows/retrain.yml against GitHub's workflow schema"
	@echo "make bench    benchmark our data path against torchvision + DataLoader, and MLflow's logging cost (docs/benchmarks.md)"

setup: system-deps venv

# What `make setup` takes from the distribution. SYSTEM_NEED: an error when the distribution has no such package
# (the default is what `make test` and .ci/run use: Debian's dataset-fashion-mnist, the suite's offline data;
# chromium, which renders the HTML report in the tests; PostgreSQL, behind the tracking server of `make server`
# and the CI rehearsal). SYSTEM_WANT: skipped with one line when absent. Each CI job names its own
# (.github/workflows/retrain.yml, docs/ci.md#system-packages).
SYSTEM_NEED ?= dataset-fashion-mnist chromium postgresql
SYSTEM_WANT ?=
system-deps:
	@python3 fmnist/ci/system_deps.py --need "$(SYSTEM_NEED)" --want "$(SYSTEM_WANT)" --sudo "$(SUDO)"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@python3 -c "import ensurepip" 2>/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv; }
	python3 -m venv $(VENV)
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps -e .
	touch $@

# Re-pin the whole dependency tree after changing pyproject.toml.
lock:
	$(PIP) freeze --exclude-editable | grep -v '^fmnist' > requirements.lock

# Any profile params.yaml defines is a target (make quick, make cpu, make full, ...): it sets `profile:` in
# params.yaml, so params, dvc.lock and the outputs always agree, then runs `dvc repro`.
PROFILES := $(shell sed -n '/^profiles:/,/^[^ #]/s/^  \([A-Za-z][A-Za-z0-9_-]*\):.*/\1/p' params.yaml)
.PHONY: $(PROFILES)
$(PROFILES): setup
	$(PY) -m fmnist.cli pipeline $@

profiles: venv
	$(PY) -m fmnist.cli profiles

# The profile this machine can finish: gpu with a CUDA GPU, cpu otherwise (make full / make cpu force one).
run: setup
	@profile=$$($(PY) -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')" || echo cpu); \
	if [ "$$profile" = gpu ]; then echo "make run: a CUDA GPU is present: running the gpu profile (make full runs the reference recipes, make cpu the CPU one)"; \
	else echo "make run: no CUDA GPU: running the cpu profile (make gpu or make full force a GPU profile)"; fi; \
	$(PY) -m fmnist.cli pipeline $$profile

# A lent GPU machine is offline and lacks pydantic (and MLflow, DVC): .gpu/ holds the four official files and the
# Python 3.12 wheels it needs, carried with the working tree (docs/gpu.md).
GPU_WHEELS := $(shell grep -iE '^(pydantic|pydantic_core|annotated-types|typing-inspection)==' requirements.lock)
gpu-carry: venv
	mkdir -p .gpu/data .gpu/wheels
	cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpu/data/
	$(PIP) download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels $(GPU_WHEELS)
	@du -sh .gpu

gpu-plan: venv
	$(PY) benchmarks/gpu_run.py plan

# make gpu-import DIR=<folder a GPU command sent back> PART=small: the bundle under results/gpu/PART (commit it),
# its runs into the MLflow store.
gpu-import: venv
	@test -n "$(DIR)" -a -n "$(PART)" || { echo "make gpu-import needs DIR=<folder sent back> PART=<part name>"; exit 2; }
	$(PY) benchmarks/gpu_run.py unpack $(DIR) --to results/gpu/$(PART)
	$(PY) -m fmnist.cli runs import results/gpu/$(PART)

# Every DVC experiment, one row each: the params that differ between them, the champion, and per
# architecture its test accuracy and training time (`fmnist exps --all-columns` keeps every column).
exps: venv
	$(PY) -m fmnist.cli exps

# MLflow's UI on the store (or the tracking server of MLFLOW_TRACKING_URI), opened on the profile's training runs.
ui: venv
	$(PY) -m fmnist.cli ui $(if $(PORT),--port $(PORT))

# The headline metrics (per architecture test/val accuracy, epochs, time; the champion) of the workspace.
metrics: venv
	$(VENV)/bin/dvc metrics show --md metrics/summary.json

# notebooks/walkthrough.py run top to bottom on the profile's experiment in the store (MLFLOW_TRACKING_URI and
# FMNIST_EXPERIMENT choose others); the executed copy, outputs and all, stays out of git in reports/.
.PHONY: notebook
notebook: venv
	mkdir -p reports
	$(VENV)/bin/jupytext --to ipynb --quiet --output reports/walkthrough.ipynb notebooks/walkthrough.py
	$(VENV)/bin/jupyter-execute --inplace reports/walkthrough.ipynb

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not e2e"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile

# Our data path against the standard torchvision + DataLoader one, on this machine; run it on a quiet one.
bench: venv
	$(PY) benchmarks/bench_datapath.py --out docs/benchmarks.md --train-batches 60,resnet18=20
	$(PY) benchmarks/bench_precision.py --out docs/bench_precision.md

# A tracking server on this machine: PostgreSQL backend store, proxied artifacts, loopback only.
# Then: export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 (docs/ci.md).
server: setup
	$(PY) -m fmnist.cli server start --dir .fmnist/server --port 5000

server-stop: venv
	$(PY) -m fmnist.cli server stop --dir .fmnist/server

# The retraining workflow played end to end with real parts; writes the transcript.
ci-rehearsal: setup
	$(PY) -m fmnist.ci.rehearsal --work .fmnist/rehearsal --out docs/ci_rehearsal.md

# fmnist sweep on a loopback PostgreSQL + mlflow server: faults mid-sweep, then wall time with 1, 2, 4 workers.
sweep-rehearsal: setup
	$(VENV)/bin/dvc repro split
	$(PY) benchmarks/sweep_rehearsal.py --json .fmnist/sweep_rehearsal.json

lint-workflow: venv
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/retrain.yml
