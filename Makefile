# Two entry points (README Quickstart): `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_RUNS := runs/demo
SEED ?= 0

.PHONY: install demo demo-data test test-fast bench clean-demo help

help:
	@echo "make demo   - install (once), build the demo corpus, train (instrument + random side info), evaluate"
	@echo "make test   - install (once) and run the test suite"
	@echo "make test-fast - the test suite without the slow tests"
	@echo "make bench  - run the benchmarks under benchmarks/"

$(STAMP): requirements.txt requirements-test.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	@touch $(STAMP)

install: $(STAMP)

demo-data: $(STAMP)
	$(PY) -m demo --out data/demo --seed $(SEED)

# Trains the paper's default setup ((A+B)-X, deep embedding model) with instrument side information and with the
# random baseline, then prints Tables 2-3 for both. Rerunning resumes/reuses finished runs; `make clean-demo` resets.
demo: demo-data
	$(PY) train.py --dataset demo --side-info instrument-count --seed $(SEED) --verbose 2 --run-dir $(DEMO_RUNS)/instrument-count
	$(PY) train.py --dataset demo --side-info random --seed $(SEED) --verbose 2 --run-dir $(DEMO_RUNS)/random
	$(PY) evaluate.py --collect $(DEMO_RUNS)/instrument-count $(DEMO_RUNS)/random

test: $(STAMP)
	$(PY) -m pytest -q

# The suite without the tests marked slow (the ones that train a model or run whole commands).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-demo:
	rm -rf data/demo $(DEMO_RUNS)
