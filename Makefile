# One-command set-up: every target creates .venv from the pinned versions on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest Testing

# Data-layer benchmark on ../shared/data (or DATA=...): JSON to bench/data_layer.json.
DATA ?= ../shared/data/mscmrseg
bench: $(STAMP)
	$(PY) -m crossmodal.benchmarks.data_layer --data $(DATA) --out bench/data_layer.json

clean:
	rm -rf $(VENV) bench .pytest_cache
