# Two entry points: `make demo` and `make test`. Both build .venv on first use:
# torch==2.13.0 (CPU wheel) first, so nothing pulls a CUDA build, then causalscope itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.causalscope-installed

.PHONY: demo test test-fast lint bench chromium fashion-mnist clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/causalscope demo --out report/causalscope-report.html
	@echo "open report/causalscope-report.html in a browser (it works offline)"

# The browser test needs Debian's chromium; install it when missing (no browser downloads).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# tests/zoo/test_data.py reads the real Fashion-MNIST IDX files from Debian's package (it skips where they are absent).
fashion-mnist:
	@test -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; }

# ruff (lint + import order) and mypy must be clean: `make test` fails on either, before any test runs.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

test: $(STAMP) chromium fashion-mnist lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) report build dist src/*.egg-info
