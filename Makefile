# Two entry points (README Quickstart): `make demo` and `make test`. Both create .venv and install the exact versions
# of requirements-lock.txt (the ones the tests pass with; `make lock` regenerates it).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_RUNS := runs/demo
SEED ?= 0
DEMO_SEEDS ?= 0 1 2 3 4
DEMO_EPOCHS ?= 6
LOCK := requirements-lock.txt

.PHONY: install demo demo-data test test-fast lint format bench lock clean-demo help

help:
	@echo "make demo   - install (once), build the demo corpus, train (instrument + random side info, seeds $(DEMO_SEEDS)),"
	@echo "              evaluate, print the tables with 95% confidence intervals, write $(DEMO_RUNS)/report.html"
	@echo "make test   - install (once) and run the test suite"
	@echo "make test-fast - the test suite without the slow tests"
	@echo "make lint   - ruff check and ruff format --check (CI runs it before the tests)"
	@echo "make format - ruff format and the fixes ruff check can make"
	@echo "make bench  - run the benchmarks under benchmarks/"
	@echo "make lock   - regenerate $(LOCK) from requirements*.txt, pinned to the versions installed in $(VENV)"

$(STAMP): $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(LOCK)
	@touch $(STAMP)

install: $(STAMP)

demo-data: $(STAMP)
	$(PY) -m demo --out data/demo --seed $(SEED)

# Trains the paper's default setup ((A+B)-X, deep embedding model) with instrument side information and with the
# random baseline, once per seed (split and initialization), DEMO_EPOCHS epochs each to stay within ~5 minutes on
# 2 cores, then prints Tables 2-3 as mean +- 95% CI over the seeds and writes the results page runs/demo/report.html.
# Rerunning resumes/reuses finished runs (runs/demo/<side-info>/seed<s>); `make clean-demo` resets.
demo: demo-data
	$(PY) reproduce.py --dataset demo --side-info instrument-count random --seeds $(DEMO_SEEDS) \
		--epochs $(DEMO_EPOCHS) --verbose 2 --out $(DEMO_RUNS)
	@echo "Results page: $(DEMO_RUNS)/report.html (one self-contained file: open it in a web browser)"

test: $(STAMP)
	$(PY) -m pytest -q

# The suite without the tests marked slow (the ones that train a model or run whole commands).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The formatter decides layout and the linter catches unused names, shadowing and mutable defaults
# (pyproject.toml, [tool.ruff]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# requirements.txt + requirements-test.txt resolved for every platform by uv, each package pinned to the version
# installed in .venv (where the tests pass): run it after `make test` passes with new versions.
lock:
	$(PY) -m pip install --quiet uv
	$(PY) -m pip freeze --all --exclude pip --exclude uv > $(VENV)/installed.txt
	$(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 requirements.txt requirements-test.txt \
		-c $(VENV)/installed.txt --custom-compile-command "make lock" -o $(LOCK)

clean-demo:
	rm -rf data/demo $(DEMO_RUNS)
