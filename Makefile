# `make demo` and `make test` each do all their own set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo dense-demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

FMNIST := /usr/share/datasets/fashion-mnist
DEMO_MODEL := localvit_gcvit_fmnist
DEMO_RUN := runs/$(DEMO_MODEL)
DEMO_EPOCHS := 15

# Trains lgvit's small GC ViT with LocalViT's feed-forward on Fashion-MNIST with the default recipe for
# DEMO_EPOCHS epochs, picking best.pt on 5,000 held-out training images, then evaluates it once on the test
# split (docs/training.md).
demo: $(STAMP)
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y dataset-fashion-mnist; fi
	$(BIN)/lgvit train --model $(DEMO_MODEL) --val-split 5000 --epochs $(DEMO_EPOCHS)
	$(BIN)/lgvit eval --checkpoint $(DEMO_RUN)/best.pt
	@echo "report: $(DEMO_RUN)/summary.md (curves.png, confusion.png, metrics.csv beside it)"

DENSE_RUN := runs/gcvit_fmnist_fasterrcnn
DENSE_ARGS ?=

# Trains Faster R-CNN on lgvit's small GC ViT on Fashion scenes (docs/dense.md), then evaluates the best
# checkpoint; DENSE_ARGS adds flags, e.g. make dense-demo DENSE_ARGS="--threads 1".
dense-demo: $(STAMP)
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y dataset-fashion-mnist; fi
	$(BIN)/lgvit train --task detect --detector fasterrcnn --backbone gcvit_fmnist --scene-size 128 \
		--train-scenes 2000 --val-scenes 200 --epochs 4 --batch-size 8 --lr 1e-3 --fpn 64 $(DENSE_ARGS)
	$(BIN)/lgvit eval --checkpoint $(DENSE_RUN)/best.pt
	@echo "report: $(DENSE_RUN)/summary.md (curves.png, predictions.png, metrics.csv beside it)"

test: $(STAMP)
	$(BIN)/ruff check lgvit tests benchmarks
	# two workers of one thread each: the 2 cores stay busy through the many small single-op tests
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -n 2

lint: $(STAMP)
	$(BIN)/ruff check lgvit tests benchmarks
	$(BIN)/ruff format --check lgvit tests

clean:
	rm -rf $(VENV) build *.egg-info
