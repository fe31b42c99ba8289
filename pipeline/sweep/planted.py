"""A sweep's fits of synthetic subjects against the planted answer, network by network.

A synthetic subject is planted from one network; a sweep fits it with every network. For each
fit whose subject has a planted truth in the run root, the fitted network's counterpart of each
planted block is its layer of highest linear CKA with it (``stages.features.similarity``), over
a seeded sample of the planted store's non-test images; the fit is then scored against the
counterparts (``stages.report.correspondence``): does the map keep the planted order, how much
of the explainable variance it reaches, and whether its layer sets hold the counterpart. Each
store's kernels are computed once per report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cache.errors import InvalidInputError, MissingInputError
from cache.store import FeatureStore
from pipeline import runroot
from pipeline.synthetic.layout import load_planted_truth
from stages.features.similarity import MAX_IMAGES, cka_matrix, layer_kernels
from stages.fit.result import FitResult
from stages.report.compare import align_vertices
from stages.report.correspondence import correspondence_scores

#: Images sampled for the similarity of two stores (the kernels grow with its square).
SIMILARITY_IMAGES = min(1000, MAX_IMAGES)
#: Columns of the table, after ``model``, ``subject``, ``planted`` and ``layers``.
SCORES = ("relative_depth_spearman", "r2_over_nc", "counterpart_exact", "set_coverage", "set_coverage_within1",
          "mean_set_size", "relative_set_size", "mean_sampling_set_size")


def planted_table(fits: Mapping[tuple[str, str], FitResult], *, run_root: Path, seed: int = 0) -> pd.DataFrame | None:
    """One row per fit of a subject with a planted truth (None when there is none).

    Args:
        fits: (model, subject) -> the fit.
        run_root: where the synthetic subjects live.
        seed: draws the images the similarity is computed on.

    Returns:
        columns ``model``, ``subject``, ``planted`` (the planted network), ``layers`` and :data:`SCORES`
        (NaN for the set columns of a fit without layer sets). Fits of subjects without a planted truth, or
        whose stores are gone, are left out.
    """
    kernels: dict[tuple[str, tuple[str, ...]], list[np.ndarray]] = {}
    rows = []
    for (model, subject), fit in fits.items():
        folder = runroot.synthetic_root(run_root) / subject
        try:
            truth = load_planted_truth(folder)
            planted_store = FeatureStore.open(truth.provenance["store"]["path"])
            store = FeatureStore.open(fit.provenance["store"]["path"])
        except (MissingInputError, InvalidInputError, KeyError, TypeError, FileNotFoundError):
            continue
        images = tuple(_sample(planted_store, store, truth, seed))
        if len(images) < 3:
            continue
        for source in (planted_store, store):
            if (str(source.path), images) not in kernels:
                kernels[str(source.path), images] = layer_kernels(source, list(images))
        cka = cka_matrix(kernels[str(planted_store.path), images], kernels[str(store.path), images])
        order = align_vertices(fit, truth)
        if (order < 0).any():
            continue
        columns = {name: np.asarray(values)[order] for name, values in fit.vertices.items()}
        planted = np.asarray(truth.vertices["layer_argmax"], dtype=np.int64)
        ceiling = np.asarray(truth.vertices["noise_ceiling"], dtype=np.float64)
        scores = correspondence_scores(planted, len(truth.layer_names), columns, cka, ceiling)
        rows.append({"model": model, "subject": subject, "planted": truth.model, "layers": len(fit.layer_names),
                     **{name: scores[name] for name in SCORES}})
    return pd.DataFrame(rows) if rows else None


def _sample(planted_store: FeatureStore, store: FeatureStore, truth: FitResult, seed: int) -> list[str]:
    """Up to :data:`SIMILARITY_IMAGES` of the images both stores hold, outside the subject's test split, seeded, in
    the planted store's order."""
    test = set(truth.provenance.get("splits", {}).get("test_ids", []))
    held = set(store.image_ids.tolist())
    candidates = np.asarray([image for image in planted_store.image_ids.tolist() if image in held and image not in test])
    if len(candidates) > SIMILARITY_IMAGES:
        keep = np.sort(np.random.default_rng(seed).choice(len(candidates), SIMILARITY_IMAGES, replace=False))
        candidates = candidates[keep]
    return candidates.tolist()

