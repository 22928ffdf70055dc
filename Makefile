# Every target does its own setup: a fresh machine needs only the Pythons and the package index.
#
# Runtimes (README "Runtimes"), each in its own virtual environment:
#   tf215        Python 3.11, TensorFlow 2.15   .venv               (the default)
#   tf221-py312  Python 3.12, TensorFlow 2.21   .venv-tf221-py312   (RUNTIME=tf221 too)
#   tf221-py313  Python 3.13, TensorFlow 2.21   .venv-tf221-py313
# `make test` lints and tests on all three; `make demo RUNTIME=tf221` and `make setup
# RUNTIME=...` pick one. tools/find_python.sh finds each interpreter (pyenv's shims are not
# trusted); name one yourself with PYTHON311=... PYTHON312=... PYTHON313=...

RUNTIMES := tf215 tf221-py312 tf221-py313
VENV_tf215 := .venv
VENV_tf221-py312 := .venv-tf221-py312
VENV_tf221-py313 := .venv-tf221-py313
PYVER_tf215 := 3.11
PYVER_tf221-py312 := 3.12
PYVER_tf221-py313 := 3.13
# PYTHON, the old name of the 3.11 interpreter, still works.
PYTHON311 ?= $(PYTHON)

RUNTIME ?= tf215
ifeq ($(RUNTIME),tf221)
override RUNTIME := tf221-py312
endif
ifeq ($(VENV_$(RUNTIME)),)
$(error RUNTIME=$(RUNTIME): must be one of $(RUNTIMES) or tf221)
endif
VENV := $(VENV_$(RUNTIME))
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup setup-all test lint demo bench-scan testdata clean

setup: $(STAMP)

setup-all: $(foreach r,$(RUNTIMES),$(VENV_$(r))/.installed)

# One environment: the interpreter found, the venv, the project with its test and beam extras.
# $(1) = runtime name.
define venv_rule
$(VENV_$(1))/.installed: pyproject.toml
	@py=$$$$(tools/find_python.sh $(PYVER_$(1)) "$$(PYTHON$(subst .,,$(PYVER_$(1))))") && \
	  echo "$(1): $(VENV_$(1)) from $$$$py" && "$$$$py" -m venv $(VENV_$(1))
	$(VENV_$(1))/bin/pip install --quiet --upgrade pip
	$(VENV_$(1))/bin/pip install --quiet -e '.[test,beam,gcs]'
	touch $$@
endef
$(foreach r,$(RUNTIMES),$(eval $(call venv_rule,$(r))))

# The whole suite on Python 3.11 / TF 2.15 and 3.12 / TF 2.21; on 3.13 (the same TF 2.21) the
# runtime layer and the checkpoint code only, to stay well inside CI's time.
PYTEST_ARGS_tf221-py313 := tests/test_runtime.py tests/test_scan.py tests/test_bundle_format.py \
  tests/test_bundle_two_shards.py tests/test_repair_in_place.py

# ruff, mypy (for that Python) and the suite on one runtime: lint-tf215, test-tf221-py312, ...
# Every environment is set up before the first suite runs: the cross-runtime tests
# (verify --runtime) use the other runtimes' interpreters.
define runtime_rules
.PHONY: lint-$(1) test-$(1)
lint-$(1): $(VENV_$(1))/.installed
	$(VENV_$(1))/bin/ruff check estimator_fix tools tests
	$(VENV_$(1))/bin/ruff format --check estimator_fix tools tests
	$(VENV_$(1))/bin/mypy --python-version $(PYVER_$(1))
test-$(1): setup-all lint-$(1)
	@$(VENV_$(1))/bin/python -c 'from estimator_fix import compat; print("=== $(1):", compat.runtime_name())'
	$(VENV_$(1))/bin/pytest -q $(PYTEST_ARGS_$(1))
endef
$(foreach r,$(RUNTIMES),$(eval $(call runtime_rules,$(r))))

lint: lint-$(RUNTIME)

test: $(foreach r,$(RUNTIMES),test-$(r))

demo: $(STAMP)
	VENV=$(VENV) bash tools/demo.sh

bench-scan: $(STAMP)
	$(BIN)/python tools/bench_scan.py

# The fixtures are frozen from TensorFlow 2.15: made on that runtime only.
testdata: $(VENV_tf215)/.installed
	$(VENV_tf215)/bin/python tools/make_testdata.py --overwrite

clean:
	rm -rf $(foreach r,$(RUNTIMES),$(VENV_$(r))) build *.egg-info .mypy_cache .ruff_cache \
	  .pytest_cache
