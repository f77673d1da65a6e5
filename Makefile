# Counterfeit: `make serve` serves the shipped model, `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel; a CUDA machine can pass TORCH_SPEC='torch' to keep its own build.
TORCH_SPEC ?= torch==2.13.0
export COUNTERFEIT_DATA_DIR ?= $(abspath ../shared/data/mnist)

.PHONY: help serve test test-slow lint data figure1 train classifier evaluate loadtest bench soak clean

help:
	@echo "make serve      serve the shipped model on 127.0.0.1:3000"
	@echo "make test       run the tests (creates .venv on first use)"
	@echo "make test-slow  run the slow tests too"
	@echo "make lint       ruff"
	@echo "make data       download MNIST into data/mnist and check its sha256"
	@echo "make figure1    redraw docs/figures/figure1.png"
	@echo "make train RUN=runs/NAME [PRESET=mnist-paper]   train in the foreground"
	@echo "make evaluate RUN=runs/NAME   evaluate the run's best snapshot (--select)"
	@echo "make classifier  retrain models/mnist-classifier (the evaluation's classifier)"
	@echo "make loadtest [PROFILE=mixed USERS=20 DURATION=60s]  locust against a fresh service"
	@echo "make bench      every benchmark ratio -> docs/benchmarks.md (quiet machine, ~10 min)"
	@echo "make soak       10 min of locust: 0 failures and RSS growth < 10% (not in CI)"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH_SPEC)'
	$(BIN)/pip install -q -e '.[train,serve,dev]'
	touch $@

# Serves every models/*/ folder with a generator (COUNTERFEIT_MODELS_DIR to change).
serve: $(BIN)/.installed
	$(BIN)/bentoml serve service.service:Counterfeit --host 127.0.0.1 --port 3000

test: $(BIN)/.installed
	$(BIN)/ruff check training service tests loadtests
	$(BIN)/python -m pytest -q

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
	$(BIN)/python -m training classifier --out models/mnist-classifier

PROFILE ?= mixed
USERS ?= 20
DURATION ?= 60s
loadtest: $(BIN)/.installed
	$(BIN)/python loadtests/run.py --profile $(PROFILE) --users $(USERS) --duration $(DURATION)

bench: $(BIN)/.installed
	$(BIN)/python loadtests/bench.py

SOAK_USERS ?= 10
SOAK_SECONDS ?= 600
soak: $(BIN)/.installed
	$(BIN)/python loadtests/soak.py --users $(SOAK_USERS) --duration $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
