#!/usr/bin/env bash
# The one-shot GPU run: stage two at subj01 scale, the training-step bench and stage one's ViT-B bench,
# each JSON summary written to $OUT (or bench/results/) as it finishes.
#
# Run from the repository root on a machine with one GPU, e.g. with a 600 s limit:
#   bash bench/device_run.sh
# Missing packages (zarr, numcodecs, donfig, google-crc32c) are installed from bench/results/wheels/
# when that folder holds wheels (see bench/fit_scale.py); nothing is downloaded.
set -euo pipefail

OUT_DIR="${OUT:-bench/results}"
mkdir -p "$OUT_DIR"
PYTHON=python3
if [ -x .venv/bin/python ]; then
    PYTHON=.venv/bin/python
elif compgen -G "bench/results/wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        bench/results/wheels/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 1. the whole fit at subj01 scale (store build, subject, fit, outputs, figures), then bench/fit.py on the GPU
timeout 420 "$PYTHON" bench/fit_scale.py --json "$OUT_DIR/fit_scale.json" || echo "fit_scale stopped: $?"
# 2. stage one: a random-init ViT-B/16 over ~5,000 images, extraction vs bare forward
timeout 150 "$PYTHON" bench/features.py --models timm:vit_base_patch16_224 --images 5000 --repeats 1 \
    --batch-size 128 --decode-workers 8 --json "$OUT_DIR/features_vitb.json" || echo "features stopped: $?"
