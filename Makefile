# Two commands from a fresh clone:  `make run`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test check lint bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

## Decentralized training on the embedded digits data over local Ray actors.
run: $(STAMP)
	$(BIN)/dfml run --algorithm dfedavg --dataset digits --clients 10 --topology ring \
		--rounds 30 --seed 0 --out runs/quickstart

## The whole test suite (what CI runs): two pytest workers, each with its own local
## Ray session; a module's tests stay on one worker (its fixtures are built once).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadscope

## The inner loop: unit and in-process tests; no Ray, no whole commands end to end.
check: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not ray and not e2e"

lint: $(STAMP)
	$(BIN)/ruff check dfml tests benchmarks
	$(BIN)/ruff format --check dfml tests benchmarks
	$(BIN)/lint-imports  # the layer contracts in pyproject.toml

bench: $(STAMP)
	$(BIN)/python benchmarks/round_time.py

clean:
	rm -rf $(VENV) runs .pytest_cache
