# `make run` serves the demo zones (`make run LISTEN=127.0.0.1:5300 HTTP=127.0.0.1:8080` elsewhere);
# `make test` runs lint, types and the whole suite.
PYTHON ?= python3
LISTEN ?= 127.0.0.1:5353
HTTP ?= 127.0.0.1:8053
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/geolb serve --zones zones --listen $(LISTEN) --http $(HTTP)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check geolb tests bench scripts
	$(BIN)/ruff format --check geolb tests bench scripts
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
