# Quick start: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "edgekit needs Python 3.10 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all]'
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/edge-demo --out demo-out --force

test: $(VENV)/.installed
	$(VENV)/bin/ruff check edgekit tests benchmarks
	$(PY) -m pytest

clean:
	rm -rf demo-out .pytest_cache .ruff_cache
