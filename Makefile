# Two commands: `make serve` runs the archive on its defaults; `make test` passes the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What is installed in the environment, each remembered by a stamp newer than pyproject.toml:
# serve needs pypacs' own dependencies only, test adds the test tools (which include them).
RUNTIME := $(VENV)/.installed-runtime
TEST_TOOLS := $(VENV)/.installed-test

.PHONY: serve test lint install soak viewer

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The test extras hold every runtime dependency too, so they also bring the runtime stamp
# up to date: `make serve` after `make test` installs nothing again.
$(TEST_TOOLS): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(RUNTIME)

install: $(RUNTIME)

serve: $(RUNTIME)
	$(BIN)/pypacs serve

# The OHIF viewer that serve offers at /viewer/, fetched from the npm registry into the data
# folder (pypacs-data/viewer/, or [storage] path of PYPACS_CONFIG); nothing goes into the repo.
viewer: $(RUNTIME)
	$(BIN)/pypacs viewer install

lint: $(TEST_TOOLS)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

# The DICOM port's bounds at length (a few minutes): 10,000 sequential associations and
# 2,000 fuzzing examples per campaign against a running server; `make test` runs 2,000 and 200.
soak: $(TEST_TOOLS)
	PYPACS_SOAK_ASSOCIATIONS=10000 PYPACS_FUZZ_EXAMPLES=2000 $(BIN)/python -m pytest -q \
		tests/net/test_port_bounds.py tests/net/test_port_fuzz.py
