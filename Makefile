# distil-glove: every target sets up what it needs, so each works on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The shared offline SST-2 copy, when this checkout sits beside it; override with SST2_DIR=...
SST2_DIR ?= $(abspath $(firstword $(wildcard ../shared/data/sst2)))
export SST2_DIR
# make distill DATA=dir [TEACHER=classifier-or-encoder] [TEACHER_CONFIG=configs/...] [TEACHER_LOGITS=scores.jsonl]
#              [UNLABELED=text.txt] [LABEL_MAP=A=0,B=1] [TRANSFER=augmented|unlabeled|both]
#              [RECIPE=configs/recipe-....json] [MODELS=a,b] [SEEDS=n] [MULTI_LABEL=1]
DATA ?=
TEACHER ?=
TEACHER_CONFIG ?=
TEACHER_LOGITS ?=
UNLABELED ?=
LABEL_MAP ?=
TRANSFER ?=
RECIPE ?=
MODELS ?=
SEEDS ?=
MULTI_LABEL ?=
export MODELS SEEDS
DISTILL_ARGS := $(if $(DATA),--data_dir=$(DATA)) $(if $(TEACHER),--teacher=$(TEACHER)) \
	$(if $(TEACHER_CONFIG),--teacher_config=$(TEACHER_CONFIG)) $(if $(TEACHER_LOGITS),--teacher_logits=$(TEACHER_LOGITS)) \
	$(if $(UNLABELED),--unlabeled=$(UNLABELED)) $(if $(LABEL_MAP),--label_map=$(LABEL_MAP)) \
	$(if $(TRANSFER),--transfer=$(TRANSFER)) $(if $(RECIPE),--recipe=$(RECIPE)) \
	$(if $(MULTI_LABEL),--multi_label)

.PHONY: setup data embeddings test test-fast demo distill few-labels ablation budget cascade bench peers raw-text gpu-check clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

setup: $(VENV)/.installed

data/sst2/.fetched: | $(VENV)/.installed
	$(if $(SST2_DIR),,$(VENV)/bin/pip install -q -r requirements-online.txt)
	$(PY) scripts/fetch_data.py --out data/sst2
	touch $@

data: data/sst2/.fetched

embeddings/glove.6B.50d.txt: | $(VENV)/.installed
	$(PY) scripts/fetch_embeddings.py --what glove

embeddings/all-MiniLM-L6-v2/config.json: | $(VENV)/.installed
	$(PY) scripts/fetch_embeddings.py --what minilm

embeddings: embeddings/glove.6B.50d.txt embeddings/all-MiniLM-L6-v2/config.json

test: setup
	$(PY) -m pytest -q -rs tests

# The suite without the tests marked slow (whole-pipeline, torchrun and bench runs): under a minute on 2 cores.
test-fast: setup
	$(PY) -m pytest -q -rs -m "not slow" tests

# The whole loop on a 3,000-sentence subset of SST-2: minutes, prints results/sst2-demo.md.
demo: setup data embeddings
	$(PY) scripts/distill.py --demo $(DISTILL_ARGS)

# The whole loop (SST-2 by default, or DATA=dir): results/<name>.md. Reruns only what changed.
distill: setup embeddings $(if $(DATA),,data)
	$(PY) scripts/distill.py $(DISTILL_ARGS)

# The few-labels case: a teacher on 5,000 labeled SST-2 sentences, the other 62,349 as unlabeled
# text; CNN and BiLSTM distilled from augmented / unlabeled / both beside gold: results/sst2-5k.md.
few-labels: setup data embeddings
	$(PY) scripts/few_labels.py

# One setting changed per CNN run (loss, temperature, alpha, n-gram mode): results/ablation.md.
# Stands on `make distill`; on a GPU: python scripts/ablation.py --stage train --device cuda --jobs 6
ablation: distill
	$(PY) scripts/ablation.py

# The training budget and the gold mix, student by student, on the demo's transfer set: results/budget.md.
budget: demo
	$(PY) scripts/budget.py

# The distilled BiLSTM and CNN of `make distill` each in front of its teacher: the threshold chosen
# on valid, the cost on test, every model's calibration: results/cascade.{md,json},
# results/reliability.png. CASCADE_RUN=sst2-demo: the demo's models instead (minutes).
CASCADE_RUN ?= sst2
cascade: $(if $(filter sst2-demo,$(CASCADE_RUN)),demo,distill)
	$(PY) scripts/cascade.py --teacher=checkpoints/$(CASCADE_RUN)/teacher --students=checkpoints/$(CASCADE_RUN)/bilstm-distill.pt,checkpoints/$(CASCADE_RUN)/cnn-distill.pt --data_dir=data/$(CASCADE_RUN) --work_dir=checkpoints/$(CASCADE_RUN)/cascade

# Speed of every model and runtime: results/bench.{json,md}, results/accuracy_latency.png (QUICK=1: minutes).
bench: setup data embeddings
	$(PY) scripts/bench.py

# fastText and Model2Vec on the same data and timing: results/peers.{json,md}; then redraws the plot.
$(VENV)/.peers-installed: requirements-peers.txt | $(VENV)/.installed
	$(VENV)/bin/pip install -q -r requirements-peers.txt
	touch $@

peers: $(VENV)/.peers-installed data embeddings
	$(PY) scripts/peers.py $(if $(DATA),--data_dir=$(DATA))
	if [ -f results/bench.json ]; then $(PY) scripts/bench.py --plot_only; fi

# A student on a raw-text copy of SST-2 against the tokenized files: results/raw_text.md.
raw-text: setup data embeddings
	$(PY) scripts/raw_text.py

# On a machine with CUDA: students' batch-1 latency and the teacher's labeling throughput
# (no download; models built from configs). results/gpu_check.json.
gpu-check: setup
	$(PY) scripts/gpu_check.py

clean:
	rm -rf checkpoints runs data/sst2-demo
