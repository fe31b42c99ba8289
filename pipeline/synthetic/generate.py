"""Make one synthetic subject end to end: geometry, planted maps, responses, Algonauts folder, truth.

Seeds: subject ``s`` with base seed ``seed`` draws everything from
``numpy.random.SeedSequence([seed, s])`` (four independent streams: geometry jitter,
maps, read-out directions, noise), so a subject is reproducible and subjects differ.
The train/test split depends only on the image ids and ``split_seed``: every subject has
the same test images (like NSD's shared images), which allows comparisons across subjects.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cache.errors import InvalidInputError, MissingInputError
from cache.jsondata import to_json_data
from cache.provenance import environment_record, hash_strings
from cache.store import FeatureStore
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.geometry import ROI_NAMES, RegionGeometry, build_region, roi_labels
from pipeline.synthetic.layout import (
    load_planted_truth, publish_folder, read_truth_record, staging_folder, write_algonauts_subject,
    write_planted_truth,
)
from pipeline.synthetic.planting import PlantedMaps, plant_maps
from pipeline.synthetic.responses import ChannelStatistics, channel_statistics, draw_repeats, generate_signal
from stages.fit.result import FitResult, layer_summary, layer_weight_column

MECHANISM = ("per-channel z-scored features; per layer, random read-out directions mixed by smooth fields; "
             "Gaussian pooling of local tokens at the store's finest grid around the planted centre with the "
             "planted size, mixed with the global token by the planted globality; per-layer signals "
             "standardised and mixed with Gaussian layer weights; softplus(k x)/k; z-score; noise of the mean "
             "of n_repeats trials set to the planted noise ceiling")


@dataclass(frozen=True)
class SynthSummary:
    """What one ``synthesize_subject`` call produced (for the command's report)."""

    name: str
    folder: Path
    n_vertices: int
    roi_counts: dict[str, int]
    noise_ceiling_target: float
    noise_ceiling_achieved: float
    seconds: float
    reused: bool = False


def subject_name(subject: int) -> str:
    """``1`` -> ``"subj01"``."""
    if isinstance(subject, bool) or not isinstance(subject, (int, np.integer)) or subject < 1:
        raise InvalidInputError(f"subject numbers are positive integers, got {subject!r}")
    return f"subj{int(subject):02d}"


def split_images(image_ids: Sequence[str], *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) id arrays, each in the given order; the test share is rounded, at least 1."""
    ids = np.asarray(image_ids, dtype=str)
    n_test = max(1, int(round(test_fraction * ids.size)))
    if ids.size - n_test < 2:
        raise InvalidInputError(f"{ids.size} images are too few for a train/test split; use at least 10")
    test = np.zeros(ids.size, dtype=bool)
    test[np.random.default_rng(seed).choice(ids.size, n_test, replace=False)] = True
    return ids[~test], ids[test]


def store_statistics(store: FeatureStore, cfg: SyntheticConfig, *, progress: bool = False) -> ChannelStatistics:
    """The channel statistics every subject made from ``store`` standardises with (all its images, finest grid)."""
    return channel_statistics(store, store.image_ids, grid=max(store.grids), batch_size=cfg.batch_size,
                              progress=progress)


def synthesize_subject(store: FeatureStore, image_files: Mapping[str, Path], root: Path, subject: int, *,
                       cfg: SyntheticConfig, seed: int, model: str, overwrite: bool = False,
                       statistics: Callable[[], ChannelStatistics] | None = None,
                       progress: bool = False) -> SynthSummary:
    """Generate ``<root>/subjNN`` from the features in ``store`` and write it atomically.

    Args:
        store: a finished feature store; every image in it is shown to the subject.
        image_files: stable image id -> image file, for every store image (hard-linked or copied).
        root: folder receiving ``subjNN`` (normally ``runroot.synthetic_root``).
        subject: subject number (1 -> ``subj01``).
        cfg: planting and generation settings.
        seed: base seed (see the module docstring).
        model: the store's model name, recorded in the truth.
        overwrite: replace an existing subject made differently.
        statistics: gives the store's channel statistics over all its images at its finest grid
            (:func:`store_statistics`), for callers making several subjects from one store; called
            only when a subject is made.

    An existing subject made from the same request (subject, seed, config, model, store
    identity) is kept and reported as reused; a different one needs ``overwrite``.
    """
    started = time.perf_counter()
    name = subject_name(subject)
    target = Path(root) / name
    request = {"subject": int(subject), "seed": int(seed), "model": model, "config": to_json_data(cfg),
               "store": store.identity()}
    wanted = to_json_data(request)
    existing = read_truth_record(target) if target.exists() else None
    if existing is not None and existing.get("request") == wanted and not overwrite:
        return _reused_summary(target, existing, started)
    if target.exists() and not overwrite:
        previous = (existing or {}).get("request", {})
        differing = sorted(key for key in wanted if previous.get(key) != wanted[key])
        raise InvalidInputError(f"{target} exists but was made differently (differs in: {', '.join(differing)}); "
                                "pass --overwrite to replace it")
    missing = [image_id for image_id in store.image_ids.tolist() if image_id not in image_files]
    if missing:
        raise MissingInputError(f"{len(missing)} feature-store images have no image file (first: {missing[:5]}); "
                                "point --images/--imageset at the folder the store was extracted from")

    geometry_rng, maps_rng, readout_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), int(subject)]).spawn(4))
    geometry = build_region(cfg, geometry_rng)
    maps = plant_maps(geometry, n_layers=store.n_layers, cfg=cfg, rng=maps_rng)
    image_ids = store.image_ids
    signal = generate_signal(store, image_ids, maps, n_readouts=cfg.n_readouts, nonlinearity=cfg.nonlinearity,
                             batch_size=cfg.batch_size, rng=readout_rng, progress=progress,
                             stats=None if statistics is None else statistics())
    responses = draw_repeats(signal, maps.noise_ceiling, n_repeats=cfg.n_repeats, rng=noise_rng).mean(axis=0)
    achieved = signal.var(axis=0) / responses.var(axis=0)

    train_ids, test_ids = split_images(image_ids, test_fraction=cfg.test_fraction, seed=cfg.split_seed)
    row = {image_id: i for i, image_id in enumerate(image_ids.tolist())}
    rows = {"train": [row[i] for i in train_ids], "test": [row[i] for i in test_ids]}
    labels = roi_labels(geometry)
    truth = planted_truth(geometry, maps, labels, subject=name, model=model, layer_names=store.layer_names)
    truth.vertices["noise_ceiling_achieved"] = achieved.astype(np.float32)
    roi_counts = {str(area): int((geometry.area == area).sum()) for area in np.unique(geometry.area) if area}
    record = {
        "request": wanted, "seed": int(seed), "config": to_json_data(cfg),
        "store": {"path": str(store.path), "identity": store.identity()},
        "image_ids_sha256": hash_strings(image_ids.tolist()),
        "splits": {"n_train": int(train_ids.size), "n_test": int(test_ids.size), "split_seed": cfg.split_seed,
                   "test_ids": test_ids.tolist()},
        "geometry": geometry.record, "mechanism": MECHANISM, "noise_ceiling_unit": "fraction (0..1)",
        "roi_counts": roi_counts, "n_vertices": geometry.n_vertices,
        "noise_ceiling": {"target_mean": float(maps.noise_ceiling.mean()), "achieved_mean": float(achieved.mean()),
                          "target_range": [float(maps.noise_ceiling.min()), float(maps.noise_ceiling.max())]},
        "environment": environment_record(),
    }

    staging = staging_folder(target)
    try:
        write_algonauts_subject(
            staging, images={split: [image_files[i] for i in ids] for split, ids in
                             (("train", train_ids), ("test", test_ids))},
            responses={split: responses[rows[split]] for split in rows}, hemisphere=geometry.hemisphere,
            fsaverage_index=geometry.fsaverage_index, roi_labels=labels, roi_names=ROI_NAMES,
            noise_ceiling=maps.noise_ceiling)
        record["seconds"] = round(time.perf_counter() - started, 2)
        write_planted_truth(staging, truth, record)
        publish_folder(staging, target, overwrite=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SynthSummary(name=name, folder=target, n_vertices=geometry.n_vertices, roi_counts=roi_counts,
                        noise_ceiling_target=float(maps.noise_ceiling.mean()),
                        noise_ceiling_achieved=float(achieved.mean()), seconds=time.perf_counter() - started)


def planted_truth(geometry: RegionGeometry, maps: PlantedMaps, labels: Mapping[str, np.ndarray], *, subject: str,
                  model: str, layer_names: Sequence[str]) -> FitResult:
    """The planted maps as a :class:`FitResult` (method ``"truth"``) in the per-vertex columns of fits.

    Besides the required columns: ``rf_size``, ``noise_ceiling``, ``preferred_layer``,
    ``hierarchy_level``, ``eccentricity``, ``polar_angle`` and ``roi_label`` (the Algonauts ROI
    name of the vertex, e.g. ``V1v`` or ``FFA-1``; ``roi`` holds the area: V1..V4, OFA, FFA,
    EBA, PPA, OPA, or ``"none"``).
    """
    columns: dict[str, np.ndarray] = {
        "vertex": np.arange(geometry.n_vertices, dtype=np.int64), "hemisphere": geometry.hemisphere,
        "fsaverage_index": geometry.fsaverage_index,
        "roi": np.where(geometry.area == "", "none", geometry.area),
        "roi_label": _label_names(labels, geometry.n_vertices),
    }
    for layer in range(maps.layer_weights.shape[1]):
        columns[layer_weight_column(layer)] = maps.layer_weights[:, layer]
    columns.update(layer_summary(maps.layer_weights))
    columns.update({
        "space_x": maps.space[:, 0], "space_y": maps.space[:, 1], "scale": maps.scale, "rf_size": maps.rf_size,
        "noise_ceiling": maps.noise_ceiling, "preferred_layer": maps.preferred_layer.astype(np.float32),
        "hierarchy_level": maps.level.astype(np.float32), "eccentricity": maps.eccentricity.astype(np.float32),
        "polar_angle": maps.polar_angle.astype(np.float32),
    })
    return FitResult(method="truth", subject=subject, model=model, layer_names=tuple(layer_names), vertices=columns)


def _label_names(labels: Mapping[str, np.ndarray], n_vertices: int) -> np.ndarray:
    names = np.full(n_vertices, "none", dtype=object)
    for roi_class, codes in labels.items():
        for code, name in ROI_NAMES[roi_class].items():
            if code:
                names[codes == code] = name
    return names.astype(str)


def _reused_summary(target: Path, record: dict[str, Any], started: float) -> SynthSummary:
    truth = load_planted_truth(target)
    return SynthSummary(name=target.name, folder=target, n_vertices=truth.n_vertices,
                        roi_counts=dict(record.get("roi_counts", {})),
                        noise_ceiling_target=float(record["noise_ceiling"]["target_mean"]),
                        noise_ceiling_achieved=float(record["noise_ceiling"]["achieved_mean"]),
                        seconds=time.perf_counter() - started, reused=True)

