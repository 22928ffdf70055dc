# Every target does its own setup: a fresh machine needs only Python 3.11 and the package index.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo bench-scan testdata clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "estimator-fix needs Python 3.11 (TensorFlow 2.15 has no wheels for " + sys.version.split()[0] + ")"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,beam]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check estimator_fix tools tests
	$(BIN)/ruff format --check estimator_fix tools tests
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

demo: $(STAMP)
	bash tools/demo.sh

bench-scan: $(STAMP)
	$(BIN)/python tools/bench_scan.py

testdata: $(STAMP)
	$(BIN)/python tools/make_testdata.py --overwrite

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
