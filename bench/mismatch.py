"""Mismatch benchmark: how honest are the maps when the fitted network is not the one that made the data?

A synthetic demo subject is planted from one network (MobileNetV2, as ``make demo`` plants it)
and fitted, with FactorTopy's default settings, by every network in ``--models`` (by default
MobileNetV2 itself, the matched case, EfficientNet-Lite0 and DINOv2-small). No fitted network but
the planted one has the planted layer; its counterpart is the fitted layer of highest linear CKA
with the planted block over the subject's training images (``stages.features.similarity``). Per
fitted network and per weight of the layer sets' model-error allowance (``--model-errors``; one
fit each, the weights only change the sets) it reports (``stages.report.correspondence``):

* the rank correlation of planted and shown relative depth, and test R^2 / noise ceiling;
* how often the map shows the counterpart, and how often the 90 % layer set holds it (and a
  layer next to it), with the mean set size against the network's layers (and from resampling alone);
* coverage and set size per bin of the vertices' R^2 / noise ceiling.

Targets: coverage >= 0.8 for every mismatched network, >= 0.86 for the matched one.

    .venv/bin/python bench/mismatch.py [--run-root DIR] [--subject 1] [--models a,b,c] [--epochs 8]
        [--model-errors 0,0.1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from recovery import ensure_inputs  # noqa: E402

from cache.store import FeatureStore  # noqa: E402
from pipeline import runroot  # noqa: E402
from pipeline.subjects import load_subject  # noqa: E402
from pipeline.synthetic.layout import load_planted_truth  # noqa: E402
from stages.features.similarity import cka_matrix, layer_kernels  # noqa: E402
from stages.fit.config import FitConfig  # noqa: E402
from stages.fit.train import fit_factortopy  # noqa: E402
from stages.report.compare import align_vertices  # noqa: E402
from stages.report.correspondence import correspondence_scores, coverage_by_accuracy  # noqa: E402
from stages.report.markdown import to_markdown  # noqa: E402

MODELS = ("mobilenet_v2", "efficientnet_lite0", "dinov2_small_imgfocus")
TARGETS = {"matched_coverage": 0.86, "mismatched_coverage": 0.8}


def ensure_store(run_root: Path, model: str) -> FeatureStore:
    """The model's feature store of the demo images, built with ``bddn features`` when missing."""
    path = runroot.feature_store_path(run_root, "demo", model)
    if not path.exists() or not FeatureStore.open(path).is_complete():
        subprocess.run([sys.executable, "-m", "pipeline.cli", "--run-root", str(run_root), "features",
                        "--model", model, "--imageset", "demo"], check=True, cwd=ROOT)
    return FeatureStore.open(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs", help="run root holding (or receiving) the inputs")
    parser.add_argument("--subject", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated fitted networks")
    parser.add_argument("--epochs", type=int, default=8, help="FactorTopy epochs (default 8, as bddn demo)")
    parser.add_argument("--model-errors", default="0,0.1",
                        help="comma-separated weights of the layer sets' model-error allowance, one fit each")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default <run root>/bench/mismatch.json)")
    args = parser.parse_args(argv)
    run_root = args.run_root.resolve()
    _, planted_model = ensure_inputs(run_root, [args.subject])
    subject = load_subject("synthetic", args.subject, root=run_root, val_fraction=args.val_fraction)
    truth = load_planted_truth(runroot.synthetic_root(run_root) / subject.name)
    train_ids = list(subject.stimulus_ids[np.asarray(subject.splits["train"])])
    planted_store = ensure_store(run_root, planted_model)
    planted_kernels = layer_kernels(planted_store, train_ids)
    results, bins = [], {}
    for model in args.models.split(","):
        store = ensure_store(run_root, model)
        cka = cka_matrix(planted_kernels, layer_kernels(store, train_ids))
        for weight in (float(w) for w in args.model_errors.split(",")):
            started = time.perf_counter()
            fit = fit_factortopy(store, subject, FitConfig(epochs=args.epochs, layer_model_error=weight),
                                 checkpoint_dir=None, progress=False)
            rows = align_vertices(fit, truth)
            columns = {name: np.asarray(values)[rows] for name, values in fit.vertices.items()}
            planted = np.asarray(truth.vertices["layer_argmax"], dtype=np.int64)
            ceiling = np.asarray(truth.vertices["noise_ceiling"], dtype=np.float64)
            row = {"model": model, "layers": store.n_layers, "model_error": weight,
                   **correspondence_scores(planted, planted_store.n_layers, columns, cka, ceiling),
                   "seconds": time.perf_counter() - started}
            results.append(row)
            bins[f"{model} model_error {weight:g}"] = coverage_by_accuracy(planted, columns, cka, ceiling).to_dict("records")
            print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    header = {"subject": subject.name, "planted": planted_model, "epochs": args.epochs,
              "n_train": len(train_ids), "n_vertices": subject.n_vertices, "targets": TARGETS}
    out = args.out or run_root / "bench" / "mismatch.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setup": header, "results": results, "by_r2_over_nc": bins}, indent=2))
    print(to_markdown(pd.DataFrame(results).round(3)))
    for name, table in bins.items():
        print(f"\n{name}\n" + to_markdown(pd.DataFrame(table).round(3)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
