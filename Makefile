# Quick start: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint clean pi-check

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

# edgekit on arm64 Debian Bookworm and Trixie roots under qemu-user 10 (needs root; roots cached in
# $EDGEKIT_PI_CACHE, default /var/cache/edgekit-pi). Without root or qemu 10 it prints why and skips.
pi-check: $(VENV)/.installed
	$(PY) -m tools.pi_check

clean:
	rm -rf demo-out .pytest_cache .ruff_cache
