# make benchmark: set up .venv and run the default suite; make test: set up and run every test.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUITE ?= quick
WORKERS ?= 2
DEVICE ?= auto

.PHONY: benchmark test lab lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

benchmark: $(STAMP)
	$(BIN)/ebmbench run $(SUITE) --workers $(WORKERS) --device $(DEVICE)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest --durations=15

lab: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,lab]'
	$(BIN)/python -m ipykernel install --sys-prefix --name ebmbench --display-name "ebmbench (.venv)"
	$(BIN)/jupyter lab notebooks/

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) results/*/ .pytest_cache
