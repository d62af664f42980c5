# `make demo` and `make test` do all set-up on a fresh machine (see scripts/setup.sh).
SHELL := /bin/bash
BIN := .venv/bin
# One BLAS/OpenMP thread: on small shared machines two threads run many times slower.
export OMP_NUM_THREADS := 1
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1

.PHONY: setup test demo export release check bench screenshots clean

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: .venv/.installed

test: setup
	$(BIN)/tito check
	$(BIN)/python -m pytest -q
	$(BIN)/nbdev-test --n-workers 1

demo: setup
	$(BIN)/tito demo

export: setup
	$(BIN)/tito export

release: setup
	$(BIN)/tito release

check: setup
	$(BIN)/tito check

bench: setup
	$(BIN)/tito bench

# Refresh docs/screenshots/ from the browser test (a plain `make test` writes them to a temp folder).
screenshots: setup
	TINYTORCH_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/test_browser.py tests/test_serve_browser.py

clean:
	rm -rf .venv .pytest_cache .hypothesis
