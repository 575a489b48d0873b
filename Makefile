# One-command set-up: every target creates .venv from the pinned versions on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test bench reproduce-mmsdnet clean

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
BUNDLE ?= Resources/Models/mmsdnet-mscmrseg
bench: $(STAMP)
	$(PY) -m crossmodal.benchmarks.data_layer --data $(DATA) --out bench/data_layer.json
	$(PY) -m crossmodal.benchmarks.mmsdnet $(if $(wildcard $(BUNDLE)/card.json),--bundle $(BUNDLE)) --out bench/mmsdnet.json

# MMSDNet Table 1 on MS-CMRSeg (reduced schedule on a CPU, full on a GPU); resumes if interrupted.
reproduce-mmsdnet: $(STAMP)
	$(PY) -m crossmodal.reproduce.mmsdnet --data $(DATA) --out results/mmsdnet-table1

clean:
	rm -rf $(VENV) bench .pytest_cache
