# Counterfeit: `make serve` serves the shipped model, `make test` runs the tests.
# Both create .venv and install what they need on first use: `make serve` only the
# service's packages (no torch, no dev tools), `make test` everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel: training here runs on CPU, and the CUDA wheel is ~3 GB more. On a CUDA
# machine pass TORCH_SPEC='torch' (or your CUDA build) to keep a GPU build.
TORCH_SPEC ?= torch==2.13.0
# serve on an NVIDIA GPU: SERVE_EXTRA=serve-gpu (onnxruntime-gpu) in its own VENV
SERVE_EXTRA ?= serve
export COUNTERFEIT_DATA_DIR ?= $(abspath ../shared/data/mnist)
# BentoML posts usage statistics to its vendor at every start unless told not to
export BENTOML_DO_NOT_TRACK := True

.PHONY: help serve test test-serve test-slow lint data figure1 train classifier evaluate loadtest bench gpu-check soak clean

help:
	@echo "make serve      serve the shipped model on 127.0.0.1:3000"
	@echo "make test       run the tests (creates .venv on first use)"
	@echo "make test-serve the service's tests in a serve-only venv (.venv-serve, no torch)"
	@echo "make test-slow  run the slow tests too"
	@echo "make lint       ruff"
	@echo "make data       download MNIST into data/mnist and check its sha256"
	@echo "make figure1    redraw docs/figures/figure1.png"
	@echo "make train RUN=runs/NAME [PRESET=mnist-paper]   train in the foreground"
	@echo "make evaluate RUN=runs/NAME   evaluate the run's best snapshot (--select)"
	@echo "make classifier  retrain training/evaluation/mnist-classifier (the evaluation's classifier)"
	@echo "make loadtest [PROFILE=mixed USERS=20 DURATION=60s]  locust against a fresh service"
	@echo "make bench      Counterfeit vs the floor and its peers under wrk, and every other"
	@echo "                benchmark ratio -> docs/benchmarks.md (quiet machine, ~15 min)"
	@echo "make gpu-check  on an NVIDIA GPU: CUDA really used, images = CPU's, GPU figures"
	@echo "make soak       10 min of locust: 0 failures and RSS growth < 10% (not in CI)"

$(BIN)/python:
	@echo "== creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# the service's packages only: numpy, pillow, onnxruntime, bentoml (~300 MB, no torch)
$(BIN)/.serve-installed: pyproject.toml | $(BIN)/python
	@echo "== installing the service into $(VENV): .[$(SERVE_EXTRA)] (no torch, no dev tools)"
	$(BIN)/pip install --progress-bar off -e '.[$(SERVE_EXTRA)]'
	touch $@

# everything: torch ($(TORCH_SPEC)), training, serving, tests, load tests (~1.4 GB)
$(BIN)/.installed: pyproject.toml | $(BIN)/python
	@echo "== installing everything into $(VENV): $(TORCH_SPEC), .[train,serve,dev]"
	$(BIN)/pip install -q '$(TORCH_SPEC)'
	$(BIN)/pip install -q -e '.[train,serve,dev]'
	touch $@ $(BIN)/.serve-installed

# Serves every models/*/ folder (COUNTERFEIT_MODELS_DIR to change).
serve: $(BIN)/.serve-installed
	@echo "== serving models/ on http://127.0.0.1:3000 (API page at /)"
	$(BIN)/bentoml serve service.service:Counterfeit --host 127.0.0.1 --port 3000

test: $(BIN)/.installed
	$(BIN)/ruff check training service tests loadtests
	$(BIN)/python -m pytest -q

# The service tier (tests/service, tests/contract) where torch is not installed: proves that
# serving needs none of the training half.
SERVE_VENV ?= .venv-serve
test-serve:
	@test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q -e '.[serve,test-serve]'
	@if $(SERVE_VENV)/bin/python -c 'import torch' 2>/dev/null; then \
		echo "$(SERVE_VENV) has torch: the serve-only test would prove nothing"; exit 1; fi
	$(SERVE_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/service tests/contract

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

lint: $(BIN)/.installed
	$(BIN)/ruff check training service tests loadtests

data: $(BIN)/.installed
	$(BIN)/python -m training data --data-dir data/mnist

figure1: $(BIN)/.installed
	$(BIN)/python -m training figure1 --out docs/figures/figure1.png

PRESET ?= mnist-paper
RUN ?= runs/$(PRESET)
train: $(BIN)/.installed
	$(BIN)/python -m training train --preset $(PRESET) --out $(RUN)

evaluate: $(BIN)/.installed
	$(BIN)/python -m training evaluate $(RUN) --select

classifier: $(BIN)/.installed
	$(BIN)/python -m training classifier --out training/evaluation/mnist-classifier

PROFILE ?= mixed
USERS ?= 20
DURATION ?= 60s
loadtest: $(BIN)/.installed
	$(BIN)/python loadtests/run.py --profile $(PROFILE) --users $(USERS) --duration $(DURATION)

bench: $(BIN)/.installed
	$(BIN)/python loadtests/bench.py

# onnxruntime-gpu in its own venv: it and onnxruntime overwrite each other's files
GPU_VENV ?= .venv-gpu
gpu-check:
	@test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q -e '.[serve-gpu]' 'httpx>=0.27' 'psutil>=5.9'
	@if $(GPU_VENV)/bin/python -c 'import importlib.metadata as m; m.version("onnxruntime")' \
		2>/dev/null; then echo "$(GPU_VENV) has onnxruntime beside onnxruntime-gpu: remove it"; \
		exit 1; fi
	$(GPU_VENV)/bin/python loadtests/gpu_check.py

SOAK_USERS ?= 10
SOAK_SECONDS ?= 600
soak: $(BIN)/.installed
	$(BIN)/python loadtests/soak.py --users $(SOAK_USERS) --duration $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
