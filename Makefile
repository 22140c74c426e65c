# `make demo` and `make test` each do all their own set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lgvit demo

test: $(STAMP)
	$(BIN)/ruff check lgvit tests
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check lgvit tests
	$(BIN)/ruff format --check lgvit tests

clean:
	rm -rf $(VENV) build *.egg-info
