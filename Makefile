# Every target sets up .venv on its own, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/taskrank serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/taskrank bench --out bench.json
	$(BIN)/python -m pytest -q tests/fuzz --fuzz-examples 200

bench-quick: $(STAMP)
	$(BIN)/taskrank bench --quick --out bench-quick.json

clean:
	rm -rf $(VENV) var *.egg-info
