# One-command set-up: every target creates .venv from the pinned versions on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint slicer-views bench reproduce-mmsdnet reproduce-dualstream clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job, on a fresh machine with no data: phantom pairs, a small MMSDNet trained for a minute
# or two, held-out pairs segmented, QA reports and Dice. `make demo DATA=<MS-CMRSeg folder>` runs the
# bundled model on that real data instead.
demo: $(STAMP)
	$(PY) -m crossmodal.demo --out demo $(if $(filter command line environment,$(origin DATA)),--data $(DATA))

test: $(STAMP)
	$(PY) -m pytest Testing

# Both modules' results in Slicer's own slice views, rendered offscreen (PNGs for the README).
slicer-views: $(STAMP)
	rm -rf build/slice-views
	CROSSMODAL_SLICE_VIEWS=build/slice-views $(PY) -m pytest -q Testing/test_slice_views.py
	for view in Red Yellow Green; do \
	  lower=$$(echo $$view | tr A-Z a-z); \
	  cp build/slice-views/$$view-aligned_cine=True-anatomy_channel=1.png Documentation/slice-views/multimodalseg-$$lower.png; \
	  cp build/slice-views/$$view-model-liver.png Documentation/slice-views/dualstreamseg-$$lower.png; \
	done
	cp build/slice-views/Red-reference-right_kidney.png Documentation/slice-views/dualstreamseg-reference-red.png

# Lint with the [tool.ruff] settings of pyproject.toml. Needs only a venv with ruff, not the engine's
# dependencies: creates a bare .venv if there is none and installs the pinned ruff into it if missing.
RUFF_VERSION := 0.17.6
lint:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m ruff --version 2>/dev/null | grep -qx "ruff $(RUFF_VERSION)" || $(PY) -m pip install --quiet ruff==$(RUFF_VERSION)
	$(PY) -m ruff check crossmodal crossmodal_slicer MultiModalSeg DualStreamSeg Testing

# Data-layer benchmark on ../shared/data (or DATA=...): JSON to bench/data_layer.json.
DATA ?= ../shared/data/mscmrseg
BUNDLE ?= Resources/Models/mmsdnet-mscmrseg
DUALSTREAM_BUNDLE ?= Resources/Models/dualstream-v4-abdomen
bench: $(STAMP)
	$(PY) -m crossmodal.benchmarks.data_layer --data $(DATA) --out bench/data_layer.json
	$(PY) -m crossmodal.benchmarks.mmsdnet $(if $(wildcard $(BUNDLE)/card.json),--bundle $(BUNDLE)) --out bench/mmsdnet.json
	$(PY) -m crossmodal.benchmarks.dualstream $(if $(wildcard $(DUALSTREAM_BUNDLE)/card.json),--bundle $(DUALSTREAM_BUNDLE)) --out bench/dualstream.json

# MMSDNet Table 1 on MS-CMRSeg (reduced schedule on a CPU, full on a GPU); resumes if interrupted.
reproduce-mmsdnet: $(STAMP)
	$(PY) -m crossmodal.reproduce.mmsdnet --data $(DATA) --out results/mmsdnet-table1

# Dual-stream Tables 1-3 on BTCV CT + CHAOS MR (reduced on a CPU, full on a GPU); resumes if interrupted.
CT ?= ../shared/data/btcv_ct
MR ?= ../shared/data/chaos_t2
reproduce-dualstream: $(STAMP)
	$(PY) -m crossmodal.reproduce.dualstream --ct $(CT) --mr $(MR) --out results/dualstream-tables

clean:
	rm -rf $(VENV) bench demo .pytest_cache
