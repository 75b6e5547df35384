# Courier — `make serve` runs the embedded default, `make test` the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install serve test check format bench soak screenshots clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

serve: install  ## run API, WebSocket, relay, workers and projections on SQLite + memory://
	$(BIN)/courier serve

test: install  ## unit, integration and end-to-end tests
	$(BIN)/pytest

bench: install  ## W1 against the services runtime, and its floors (docs/PERFORMANCE.md)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/courier bench

soak: install  ## 15 minutes at half the measured maximum, WebSocket subscribers on (docs/PERFORMANCE.md)
	$(BIN)/python -m benchmarks.soak

screenshots: install  ## the console's screenshots in docs/screenshots (needs /usr/bin/chromium)
	$(BIN)/python -m tests.e2e.console_screenshots docs/screenshots

check: install  ## formatting, lint, types, layering
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
