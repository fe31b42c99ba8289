"""In-silico prediction speed: ``bddn predict``'s path (extraction with the fit's recipe, then the streamed read-out)
against the fit's own prediction pass over the same images, measured in one run.

Builds in a temporary folder: ``--train-images`` demo images and their store for ``--model`` (random-init
weights), a subject of ``--vertices`` vertices with random responses, a one-epoch FactorTopy fit (no warm
start; the numbers of a prediction do not depend on how well it fits), and ``--images`` new demo images
(another seed). Then times, in phases with their peak RSS (``stages.resources.PhaseMonitor``):

- ``features``: the new images extracted by the fit's recipe (``LoadedFit.image_store``: model load,
  decoding, forward passes, store writes);
- ``readout``: ``LoadedFit.predict_store`` streaming the store in blocks into the Zarr array;
- ``fit_pass``: the fit's own pass, ``stages.fit.train.predict`` over a feature source of the same images
  as the fit builds it for its test split (resident when it fits), in z-units, no writing: the baseline;
- ``ridge_readout``: a ridge fit of the same subject (its ``coefficients.safetensors``) predicting the same
  store into a Zarr array (the ridge side of the one predictor interface).

Prints images/s end to end and per phase, the share of time in extraction vs read-out, the read-out's
ratio to the fit's own pass, and the peak RSS of each phase.

Default: the tiny test ViT (timm:test_vit, 6 x 64 channels) at 2,400 vertices and 64 images, runnable on
2 cores. ViT-B size: ``--model timm:vit_base_patch16_224 --vertices 37984 --images 200`` (12 x 768
channels, the subj01 vertex count; for a GPU machine, ``--device cuda``).

Usage: python bench/predict.py [--images 64] [--train-images 24] [--vertices 2400] [--model timm:test_vit]
                               [--device auto] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import cli, runroot
from pipeline.api import load_fit
from stages.fit.coefficients import COEFFICIENTS_FILE
from stages.fit.config import FitConfig
from stages.fit.ridge import RidgeConfig, fit_ridge
from stages.fit.streaming import open_features
from stages.fit.train import fit_factortopy, predict
from stages.resources import PhaseMonitor
from stages.subject import Subject
from cache.store import FeatureStore


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="new images predicted (default 64)")
    parser.add_argument("--train-images", type=int, default=24, help="images the throwaway fit is trained on")
    parser.add_argument("--vertices", type=int, default=2400, help="fitted vertices (subj01: 37984)")
    parser.add_argument("--model", default="timm:test_vit", help="model id, random-init weights")
    parser.add_argument("--size", type=int, default=96, help="side of the demo images in pixels")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (extraction, fit and read-out)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary there")
    return parser.parse_args()


def random_subject(store: FeatureStore, n_vertices: int) -> Subject:
    """A subject over every image of ``store`` with random responses on random sphere points (80/10/10 split)."""
    rng = np.random.default_rng(0)
    n_images = store.n_images
    points = rng.normal(size=(n_vertices, 3))
    order = rng.permutation(n_images)
    n_held = max(2, n_images // 10)
    hemisphere = np.where(np.arange(n_vertices) < n_vertices // 2, "lh", "rh")
    return Subject(name="subj01", stimulus_ids=np.asarray(store.image_ids),
                   responses=rng.normal(size=(n_images, n_vertices)).astype(np.float32),
                   hemisphere=hemisphere, fsaverage_index=np.arange(n_vertices, dtype=np.int64),
                   sphere_coords=(100 * points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32),
                   rois={"all": np.ones(n_vertices, bool)},
                   splits={"test": np.sort(order[:n_held]), "val": np.sort(order[n_held:2 * n_held]),
                           "train": np.sort(order[2 * n_held:])},
                   split_seed=0, noise_ceiling=None, mesh="fsaverage", source={"reader": "bench"})


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as work:
        root = Path(work) / "runs"
        base = ["--run-root", str(root)]
        for name, count, seed in (("seen", args.train_images, 0), ("new", args.images, 1)):
            assert cli.main([*base, "demo-images", "--count", str(count), "--size", str(args.size), "--seed",
                             str(seed), "--imageset", name]) == 0
        assert cli.main([*base, "features", "--model", args.model, "--random-init", "--imageset", "seen",
                         "--device", args.device, "--no-progress"]) == 0
        store = FeatureStore.open(runroot.feature_store_path(root, "seen", args.model))
        subject = random_subject(store, args.vertices)
        result = fit_factortopy(store, subject, FitConfig(epochs=1, batch_size=8, warm_start="none",
                                                          device=args.device, layer_resamples=0),
                                checkpoint_dir=None, progress=False)
        fit = load_fit(result.save(runroot.fit_dir(root, args.model, "subj01")))
        ridge = load_fit(fit_ridge(store, subject, RidgeConfig(layer_resamples=0, device=args.device)).save(
            runroot.fit_dir(root, args.model, "subj01", "ridge")))
        coefficient_mb = (ridge.path / COEFFICIENTS_FILE).stat().st_size / 2**20
        with PhaseMonitor() as monitor:
            with monitor.phase("features"):
                new, ids = fit.image_store(root / "imagesets" / "new", device=args.device)
            with monitor.phase("readout"):
                fit.predict_store(new, ids, out=Path(work) / "new.zarr", device=args.device)
            predictor = fit.predictor(device=args.device)
            source = open_features(new, ids, np.zeros((len(ids), predictor.n_vertices), np.float32),
                                   layer_indices=predictor.layer_indices(new), grid=predictor.cfg.grid,
                                   device=predictor.device, resident=predictor.cfg.resident,
                                   scales=predictor.scales)
            with monitor.phase("fit_pass"):
                started = time.perf_counter()
                predict(predictor.model, source, predictor.cfg, predictor.precision)
                own = time.perf_counter() - started
            with monitor.phase("ridge_readout"):
                ridge.predict_store(new, ids, out=Path(work) / "ridge.zarr", device=args.device)
        phases = monitor.record()
    seconds = {name: entry["seconds"] for name, entry in phases.items()}
    total = seconds["features"] + seconds["readout"]
    summary = {"images": args.images, "vertices": args.vertices, "model": args.model, "device": str(predictor.device),
               "images_per_s": args.images / total, "readout_images_per_s": args.images / seconds["readout"],
               "features_share": seconds["features"] / total, "readout_share": seconds["readout"] / total,
               "readout_vs_fit_pass": seconds["readout"] / own,
               "ridge_readout_images_per_s": args.images / seconds["ridge_readout"],
               "ridge_coefficients_mb": coefficient_mb, "phases": phases}
    print(f"predict {args.images} new images x {args.vertices} vertices, {args.model} on {summary['device']}: "
          f"{summary['images_per_s']:.1f} images/s end to end ({summary['features_share']:.0%} of the time in "
          f"feature extraction, {summary['readout_share']:.0%} in the read-out)")
    print(f"read-out {summary['readout_images_per_s']:.1f} images/s; fit's own prediction pass "
          f"{args.images / own:.1f} images/s; ratio read-out / fit pass {summary['readout_vs_fit_pass']:.2f}")
    print(f"ridge read-out {summary['ridge_readout_images_per_s']:.1f} images/s (coefficients.safetensors "
          f"{coefficient_mb:.0f} MB)")
    for name, entry in phases.items():
        print(f"  {name:13s} {entry['seconds']:7.2f} s   peak RSS {entry['peak_rss_gb']:.2f} GB")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
