"""Recovery benchmark: does a fit find the answer planted in a synthetic subject?

On a synthetic subject (demo images -> mobilenet_v2 store -> ``bddn synth``; built
here when the run root lacks them) it fits FactorTopy with the reference preset,
FactorTopy in the improved mode, and the per-layer ridge baseline, all on the same
split, then scores each against the planted truth. Two more methods fit several
subjects (``--joint-subjects``, default 1,2,3): ``joint`` fits them jointly (shared
selectors, one read-out each; improved-mode config) and ``improved-each`` fits the
improved mode on each separately; each gives a row for the benchmarked subject and a
``<method>-mean`` row averaged over the subjects. The numbers:

* layer-argmax accuracy, exact and within +-1 layer;
* receptive-field centre error, median over vertices, in cells of the 8x8 grid
  (the image spans 2 units, so one cell is 0.25); ridge has no sample point;
* Spearman correlation of the fitted scale with the planted globality and with the
  planted receptive-field size;
* mean test R^2 as a fraction of the mean noise ceiling (and the median per-vertex ratio);
* for fits with layer sets, the calibration of the 90 % layer set: the share of vertices whose planted
  layer lies in it (about 0.9 when calibrated) and its mean size (:func:`layer_set_calibration`).

Targets (noise ceiling 0.4, >= 1,000 training images): layer within +-1 >= 95 %, exact
>= 80 %, median centre error <= 1 cell, R^2 / NC >= 0.8.

Method ``learned`` is the improved mode with a trained layer selector
(``stages.fit.config.LEARNED_LAYER_PRESET``) where ``improved`` keeps the warm-started layer
choice fixed. ``--shapes`` benchmarks two model shapes, each on its own store and planted
subjects: ``mobilenet_v2`` (19 blocks of 16..1,280 channels, trained weights; the run root
itself) and ``vit12`` (a random-init timm ``vit_tiny_patch16_224``: 12 blocks of 192 channels
whose residual stream makes neighbouring blocks alike; under ``<run root>/vit12``, from the
same demo images), with one table each.

    .venv/bin/python bench/recovery.py [--run-root DIR] [--subject 1] [--methods reference,improved,ridge]
        [--joint-subjects 1,2,3] [--epochs N] [--set improved.KEY=VALUE ...] [--shapes mobilenet_v2,vit12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cache.store import FeatureStore  # noqa: E402
from pipeline import runroot  # noqa: E402
from pipeline.config import build_config  # noqa: E402
from pipeline.subjects import load_subject  # noqa: E402
from pipeline.surfaces import mesh_neighbours, shared_sphere_coordinates  # noqa: E402
from pipeline.synthetic.layout import load_planted_truth  # noqa: E402
from stages.fit.config import LEARNED_LAYER_PRESET, REFERENCE_PRESET, FitConfig  # noqa: E402
from stages.fit.multisubject import fit_factortopy_multi  # noqa: E402
from stages.fit.result import FitResult  # noqa: E402
from stages.fit.ridge import RidgeConfig, fit_ridge  # noqa: E402
from stages.fit.train import fit_factortopy  # noqa: E402
from stages.report.compare import align_vertices  # noqa: E402
from stages.subject import Subject  # noqa: E402

MODEL = runroot.DEFAULT_MODEL
CELL = 2.0 / 8.0
#: Model shapes: name -> (model id, random-init weights, sub-folder of the run root or None for the run root).
SHAPES = {"mobilenet_v2": (MODEL, False, None), "vit12": ("timm:vit_tiny_patch16_224", True, "vit12")}
#: Config presets under the improved mode's defaults, by method.
PRESETS = {"reference": REFERENCE_PRESET, "learned": LEARNED_LAYER_PRESET}
TARGETS = {"layer_within1": 0.95, "layer_exact": 0.80, "centre_error_cells": 1.0, "r2_over_nc": 0.8}


def ensure_inputs(run_root: Path, subjects: list[int], shape: str = "mobilenet_v2") -> tuple[Path, str]:
    """Build the demo images, the shape's feature store and the synthetic subjects planted on it when missing;
    returns the shape's run root and model id. The demo images always live in ``run_root``."""
    model, random_init, folder = SHAPES[shape]
    shape_root = run_root if folder is None else run_root / folder
    bddn = [sys.executable, "-m", "pipeline.cli", "--run-root", str(shape_root)]
    images = runroot.imageset_dir(run_root, "demo")
    if not images.is_dir():
        subprocess.run([sys.executable, "-m", "pipeline.cli", "--run-root", str(run_root), "demo-images"],
                       check=True, cwd=ROOT)
    source = ["--imageset", "demo"] if folder is None else ["--images", str(images)]
    store = runroot.feature_store_path(shape_root, "demo", model)
    if not store.exists() or not FeatureStore.open(store).is_complete():
        subprocess.run(bddn + ["features", "--model", model, *source] + (["--random-init"] if random_init else []),
                       check=True, cwd=ROOT)
    missing = [str(n) for n in subjects if not (runroot.synthetic_root(shape_root) / f"subj{n:02d}").is_dir()]
    if missing:
        subprocess.run(bddn + ["synth", "--subjects", *missing, "--model", model, *source], check=True, cwd=ROOT)
    return shape_root, model


def _truth_rows(fit: FitResult, truth: FitResult) -> np.ndarray:
    """For each vertex of the planted truth, the fit's row at the same hemisphere and fsaverage index."""
    rows = align_vertices(fit, truth)
    if (rows < 0).any():
        raise ValueError(f"{(rows < 0).sum()} planted vertices are missing from the fit")
    return rows


def recovery_scores(fit: FitResult, truth: FitResult) -> dict[str, float]:
    """The benchmark's numbers for one fit against the planted truth (vertices matched by hemisphere and index)."""
    rows = _truth_rows(fit, truth)
    f = {name: np.asarray(values)[rows] for name, values in fit.vertices.items()}
    t = truth.vertices
    difference = np.abs(f["layer_argmax"].astype(int) - t["layer_argmax"].astype(int))
    centre = np.hypot(f["space_x"] - t["space_x"], f["space_y"] - t["space_y"]) / CELL
    nc = np.asarray(t["noise_ceiling"], dtype=np.float64)
    r2 = np.asarray(f["r2_test"], dtype=np.float64)
    return {
        "layer_exact": float((difference == 0).mean()),
        "layer_within1": float((difference <= 1).mean()),
        "layer_spearman": float(spearmanr(f["layer_mean"], t["layer_mean"]).statistic),
        "layer_modal_share": float(np.bincount(f["layer_argmax"].astype(int)).max() / len(difference)),
        "centre_error_cells": float(np.nanmedian(centre)) if np.isfinite(centre).any() else float("nan"),
        "scale_vs_globality": _spearman(f["scale"], t["scale"]),
        "scale_vs_rf_size": _spearman(f["scale"], t["rf_size"]),
        "mean_r2_test": float(r2.mean()),
        "r2_over_nc": float(r2.mean() / nc.mean()),
        "median_r2_over_nc": float(np.median(r2 / nc)),
        "mean_r2_val": float(np.mean(f["r2_val"])),
    }


def layer_set_calibration(fit: FitResult, truth: FitResult) -> dict[str, float]:
    """Calibration of the fit's 90 % layer sets against the planted layer (NaN when the fit has no layer sets).

    ``layer_set_coverage``: share of vertices whose planted layer lies in the set (about 0.9 when the sets are
    calibrated; more when layers are clearly separated); ``mean_layer_set_size``; ``shown_layer_confidence``: mean
    layer confidence of the layer the map shows; ``confident_exact``: layer accuracy over the vertices whose set
    holds one layer (what a reader may trust), with ``confident_share`` the share of such vertices.
    """
    if "layer_set_size" not in fit.vertices:
        return {name: float("nan") for name in ("layer_set_coverage", "mean_layer_set_size", "shown_layer_confidence",
                                                "confident_exact", "confident_share")}
    rows = _truth_rows(fit, truth)
    planted = np.asarray(truth.vertices["layer_argmax"], dtype=int)
    in_set = np.stack([np.asarray(fit.vertices[f"layer_in_set_{layer:02d}"])[rows]
                       for layer in range(len(fit.layer_names))], axis=1)
    size = np.asarray(fit.vertices["layer_set_size"])[rows]
    single = size == 1
    shown = np.asarray(fit.vertices["layer_argmax"], dtype=int)[rows]
    return {"layer_set_coverage": float(in_set[np.arange(len(rows)), planted].mean()),
            "mean_layer_set_size": float(size.mean()),
            "shown_layer_confidence": float(np.mean(np.asarray(fit.vertices["layer_confidence"])[rows])),
            "confident_exact": float((shown[single] == planted[single]).mean()) if single.any() else float("nan"),
            "confident_share": float(single.mean())}


def layer_set_table(rows: dict[str, dict]) -> str:
    """The layer-set calibration of every method with layer sets, as a Markdown table."""
    columns = ["layer_set_coverage", "mean_layer_set_size", "shown_layer_confidence", "confident_share",
               "confident_exact", "layer_exact"]
    lines = ["", "90 % layer sets against the planted layer (coverage target about 0.9):", "",
             "| method | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for method, row in rows.items():
        if np.isfinite(row.get("layer_set_coverage", float("nan"))):
            lines.append(f"| {method} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0:
        return float("nan")
    return float(spearmanr(a[keep], b[keep]).statistic)


def method_configs(args: argparse.Namespace) -> dict[str, FitConfig]:
    """The FactorTopy configs to benchmark: reference preset, improved mode and joint fit (improved mode), with
    overrides."""
    overrides: dict[str, dict] = {"reference": {}, "improved": {}, "joint": {}, "learned": {}}
    for item in args.set:
        target, _, assignment = item.partition(".")
        name, _, value = assignment.partition("=")
        overrides.setdefault(target, {})[name] = json.loads(value)
    epochs = {} if args.epochs is None else {"epochs": args.epochs}
    return {method: build_config(FitConfig, PRESETS.get(method), epochs, overrides.get(method),
                                 where=f"{method} config")
            for method in ("reference", "improved", "joint", "learned")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs", help="run root holding (or receiving) the inputs")
    parser.add_argument("--subject", type=int, default=1)
    parser.add_argument("--methods", default="reference,improved,ridge",
                        help="comma-separated: reference, improved, ridge, joint, improved-each, learned")
    parser.add_argument("--joint-subjects", default="1,2,3",
                        help="subjects of the joint and improved-each methods (comma-separated, must include --subject)")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="validation share of the non-test images (0.05 leaves >= 1,000 training images of 1,200)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every FactorTopy mode (default: theirs)")
    parser.add_argument("--set", action="append", default=[], metavar="MODE.KEY=JSON",
                        help='override a config key, e.g. improved.selector_lr=0.01 or improved.model={"scale_mode":"pyramid"}')
    parser.add_argument("--shapes", default="mobilenet_v2",
                        help=f"comma-separated model shapes, one table each: {', '.join(SHAPES)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file for the results (default: <run root>/bench/recovery.json; "
                             "recovery-<shape>.json for other shapes)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    several = {"joint", "improved-each"} & set(methods)
    numbers = [int(n) for n in args.joint_subjects.split(",")] if several else [args.subject]
    if args.subject not in numbers:
        parser.error(f"--joint-subjects {args.joint_subjects} must include --subject {args.subject}")
    shapes = args.shapes.split(",")
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        parser.error(f"--shapes {args.shapes}: unknown {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    if args.out is not None and len(shapes) > 1:
        parser.error("--out takes one shape; with several, each shape's results go to its default file")
    for shape in shapes:
        bench_shape(args, shape, methods, numbers)
    return 0


def bench_shape(args: argparse.Namespace, shape: str, methods: list[str], numbers: list[int]) -> None:
    """Fit every method on one model shape's planted subject(s), write the JSON and print the table."""
    run_root = args.run_root.resolve()
    shape_root, model = ensure_inputs(run_root, numbers, shape)
    store = FeatureStore.open(runroot.feature_store_path(shape_root, "demo", model))
    subjects = [load_subject("synthetic", n, root=shape_root, val_fraction=args.val_fraction) for n in numbers]
    truths = {s.name: load_planted_truth(runroot.synthetic_root(shape_root) / s.name) for s in subjects}
    subject = subjects[numbers.index(args.subject)]
    configs = method_configs(args)
    rows = {}
    for method in methods:
        started = time.perf_counter()
        fits = run_method(method, store, subject, subjects, configs)
        seconds = time.perf_counter() - started
        fit = fits[subject.name]
        rows[method] = {**recovery_scores(fit, truths[subject.name]), "seconds": seconds,
                        "epochs_run": fit.metrics.get("epochs_run"), "best_epoch": fit.metrics.get("best_epoch"),
                        "warm_start_seconds": fit.metrics.get("warm_start_seconds"),
                        "history": getattr(fit, "history", None),
                        "config": fit.config}
        if len(fits) > 1:
            each = [recovery_scores(f, truths[name]) for name, f in fits.items()]
            rows[f"{method}-mean"] = {**{key: float(np.mean([row[key] for row in each])) for key in each[0]},
                                      "seconds": seconds, "subjects": list(fits)}
        rows[method].update(layer_set_calibration(fit, truths[subject.name]))
        for name in [method] + ([f"{method}-mean"] if len(fits) > 1 else []):
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[name].items() if isinstance(v, float)),
                  flush=True)
    header = {"shape": shape, "model": model, "subject": subject.name, "n_train": len(subject.splits["train"]), "n_val": len(subject.splits["val"]),
              "n_test": len(subject.splits["test"]), "n_vertices": subject.n_vertices, "n_layers": store.n_layers,
              "mean_noise_ceiling": float(np.mean(truths[subject.name].vertices["noise_ceiling"])), "targets": TARGETS}
    default = "recovery.json" if shape == "mobilenet_v2" else f"recovery-{shape}.json"
    out = args.out or run_root / "bench" / default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setup": header, "results": rows}, indent=2, default=str))
    print(markdown_table(rows, header))
    print(layer_set_table(rows))


def run_method(method: str, store: FeatureStore, subject: Subject, subjects: list[Subject],
               configs: dict[str, FitConfig]) -> dict[str, FitResult]:
    """The fits of one benchmarked method, by subject name: ``subject`` alone, or every one of ``subjects``
    for ``joint`` (one joint fit) and ``improved-each`` (one improved-mode fit each)."""
    if method == "ridge":
        return {subject.name: fit_ridge(store, subject, RidgeConfig())}
    if method == "joint":
        cfg = configs["joint"]
        shared = shared_sphere_coordinates(subjects)
        fits = fit_factortopy_multi(store, shared, cfg, checkpoint_dir=None, progress=False,
                                    neighbours=[_neighbours(cfg, s) for s in shared])
        return {fit.subject: fit for fit in fits}
    if method == "improved-each":
        return {s.name: fit_factortopy(store, s, configs["improved"], checkpoint_dir=None, progress=False,
                                       neighbours=_neighbours(configs["improved"], s)) for s in subjects}
    return {subject.name: fit_factortopy(store, subject, configs[method], checkpoint_dir=None, progress=False,
                                         neighbours=_neighbours(configs[method], subject))}


def _neighbours(cfg: FitConfig, subject: Subject) -> np.ndarray | None:
    return mesh_neighbours(subject.hemisphere, subject.fsaverage_index) if cfg.smoothness_weight > 0 else None


def markdown_table(rows: dict[str, dict], header: dict) -> str:
    """The results as a Markdown table with the targets in the last row."""
    columns = ["layer_exact", "layer_within1", "layer_spearman", "layer_modal_share", "centre_error_cells", "scale_vs_globality",
               "scale_vs_rf_size", "mean_r2_test", "r2_over_nc", "seconds"]
    lines = [f"{header['shape']} ({header['model']}), subject {header['subject']}: {header['n_train']} train / {header['n_val']} val / {header['n_test']} test "
             f"images, {header['n_vertices']} vertices, {header['n_layers']} layers, mean NC "
             f"{header['mean_noise_ceiling']:.2f}", "",
             "| method | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for method, row in rows.items():
        lines.append(f"| {method} | " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                                                   for c in columns) + " |")
    lines.append("| target | " + " | ".join(str(TARGETS.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
