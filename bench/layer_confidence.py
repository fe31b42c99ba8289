"""Cost of the layer sets: the warm start's per-layer scores with and without the bootstrap over images.

On the demo's mobilenet_v2 store and synthetic subject (built by ``make demo`` or
``bench/recovery.py``), it times :func:`stages.fit.layer_scores.score_layers` alone (the
baseline) and with a :class:`stages.fit.layer_confidence.LayerBootstrap` (one more pass over
the training images per group of feature-space layers, the image-kernel layers' exact
residuals, the weighted sums and the sets), alternating them ``--repeats`` times, and prints
the median seconds of each, their ratio and the bootstrap's memory.

    .venv/bin/python bench/layer_confidence.py [--run-root runs] [--subject 1] [--resamples 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cache.store import FeatureStore  # noqa: E402
from pipeline import runroot  # noqa: E402
from pipeline.subjects import load_subject  # noqa: E402
from stages.fit.layer_confidence import LayerBootstrap  # noqa: E402
from stages.fit.layer_scores import score_layers  # noqa: E402
from stages.fit.warmstart import SCORE_SETTINGS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs")
    parser.add_argument("--subject", type=int, default=1)
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    store = FeatureStore.open(runroot.feature_store_path(args.run_root, "demo", runroot.DEFAULT_MODEL))
    subject = load_subject("synthetic", args.subject, root=args.run_root)
    layers = list(range(store.n_layers))
    device = torch.device("cpu")
    settings = dict(layer_indices=layers, grid=8, device=device, alphas=SCORE_SETTINGS.alphas,
                    feature_sets=SCORE_SETTINGS.feature_sets, local_pool=SCORE_SETTINGS.local_pool,
                    batch_size=SCORE_SETTINGS.batch_size)
    n_train = len(subject.splits["train"])
    seconds: dict[str, list[float]] = {"scores": [], "scores + layer sets": []}
    for _ in range(args.repeats):
        tic = time.perf_counter()
        plain = score_layers(store, subject, **settings)
        seconds["scores"].append(time.perf_counter() - tic)
        tic = time.perf_counter()
        bootstrap = LayerBootstrap(n_train, len(layers), subject.n_vertices, n_resamples=args.resamples)
        with_sets = score_layers(store, subject, **settings, bootstrap=bootstrap)
        sets = bootstrap.sets()
        seconds["scores + layer sets"].append(time.perf_counter() - tic)
        np.testing.assert_allclose(with_sets, plain, atol=1e-6)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{subject.name}: {n_train} training images, {subject.n_vertices} vertices, {len(layers)} layers, "
          f"{args.resamples} replicates; median of {args.repeats} runs (CPU, {torch.get_num_threads()} threads)")
    for name, value in median.items():
        print(f"  {name}: {value:.2f} s")
    print(f"  ratio (with layer sets / scores alone): {median['scores + layer sets'] / median['scores']:.2f}")
    print(f"  bootstrap sums: {LayerBootstrap.nbytes(n_train, len(layers), subject.n_vertices, args.resamples) / 2**20:.1f}"
          f" MiB; mean set size {sets.in_set.sum(axis=1).mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
