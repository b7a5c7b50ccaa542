# distil-glove: every target sets up what it needs, so each works on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The shared offline SST-2 copy, when this checkout sits beside it; override with SST2_DIR=...
SST2_DIR ?= $(abspath $(firstword $(wildcard ../shared/data/sst2)))
export SST2_DIR
DATA := data/sst2
MODELS ?= cnn,densenet-cnn,densenet-dsa,bilstm
export MODELS
# The demo's students: the BiLSTM needs more than the demo's 12k augmented sentences (README)
DEMO_MODELS ?= cnn,densenet-cnn,densenet-dsa

.PHONY: setup data embeddings test demo distill ablation bench gpu-check clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

setup: $(VENV)/.installed

$(DATA)/.fetched: | $(VENV)/.installed
	$(PY) scripts/fetch_data.py --out $(DATA)
	touch $@

data: $(DATA)/.fetched

embeddings/glove.6B.50d.txt: | $(VENV)/.installed
	$(PY) scripts/fetch_embeddings.py --what glove

embeddings/all-MiniLM-L6-v2/config.json: | $(VENV)/.installed
	$(PY) scripts/fetch_embeddings.py --what minilm

embeddings: embeddings/glove.6B.50d.txt embeddings/all-MiniLM-L6-v2/config.json

test: setup
	$(PY) -m pytest -q tests

# The whole loop on a 3,000-sentence subset: minutes, prints results/demo.md.
demo: setup data embeddings
	$(PY) scripts/distill.py --demo --models=$(DEMO_MODELS)

# The whole loop on SST-2 (skips stages whose outputs are up to date): results/sst2.md.
distill: setup data embeddings
	$(PY) scripts/distill.py

# One setting changed per CNN run (loss, temperature, alpha, n-gram mode): results/ablation.md.
# Stands on `make distill`; on a GPU: python scripts/ablation.py --stage train --device cuda --jobs 6
ablation: distill
	$(PY) scripts/ablation.py

# Speed: results/bench.json, results/bench.md, results/accuracy_latency.png (QUICK=1: under 3 minutes).
bench: setup data embeddings
	$(PY) scripts/bench.py

# On a machine with CUDA: students' batch-1 latency and the teacher's labeling throughput
# (no download; models built from configs). results/gpu_check.json.
gpu-check: setup
	$(PY) scripts/gpu_check.py

clean:
	rm -rf checkpoints runs data/sst2-demo
