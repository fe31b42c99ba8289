"""How honest a fit's layer map is when the fitted network is not the one that made the responses.

A synthetic subject planted from one network and fitted with another has no "right layer" in the
fitted network, only a counterpart: the fitted layer most similar to the planted one by linear
CKA (:mod:`stages.features.similarity`). Against it a fit is judged as a reader would use it:
does the map keep the planted hierarchy's order (rank correlation of relative depth), how much
of the explainable variance does the fit reach (R^2 / noise ceiling), and does each vertex's
90 % layer set contain the counterpart (coverage), at what set size, and how both vary with how
well the vertex is predicted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from cache.errors import InvalidInputError
from stages.fit.layer_confidence import in_set_column
from stages.report.depth import relative_depth

#: The scores that need the fit's layer sets.
SET_SCORES = ("set_coverage", "set_coverage_within1", "mean_set_size", "relative_set_size", "mean_sampling_set_size")
#: Edges of the R^2 / noise-ceiling bins of :func:`coverage_by_accuracy`.
ACCURACY_EDGES = (-np.inf, 0.25, 0.5, 0.75, np.inf)


def counterpart_layers(planted_layer: np.ndarray, cka: np.ndarray) -> np.ndarray:
    """Each vertex's counterpart: the fitted layer of highest CKA with its planted layer.

    Args:
        planted_layer: int array of shape (n_vertices,), layer indices of the planted network.
        cka: array of shape (n_planted_layers, n_fitted_layers).
    """
    planted = np.asarray(planted_layer, dtype=np.int64)
    if planted.min(initial=0) < 0 or planted.max(initial=0) >= cka.shape[0]:
        raise InvalidInputError(f"planted layers range {planted.min()}..{planted.max()}, but the similarity matrix "
                                f"has {cka.shape[0]} planted layers")
    return np.asarray(cka).argmax(axis=1)[planted]


def layer_set_matrix(columns: Mapping[str, np.ndarray], n_layers: int) -> np.ndarray:
    """The fit's 90 % layer sets as a bool array of shape (n_vertices, n_layers), from its ``layer_in_set_XX`` columns."""
    names = [in_set_column(layer) for layer in range(n_layers)]
    missing = [name for name in names if name not in columns]
    if missing:
        raise InvalidInputError(f"the fit has no layer sets ({missing[0]} missing): fit with --layer-resamples > 0")
    return np.stack([np.asarray(columns[name], dtype=bool) for name in names], axis=1)


def correspondence_scores(planted_layer: np.ndarray, n_planted_layers: int, columns: Mapping[str, np.ndarray],
                          cka: np.ndarray, noise_ceiling: np.ndarray) -> dict[str, float]:
    """A fit of another network against the planted layers' counterparts.

    Args:
        planted_layer: int array of shape (n_vertices,), the planted network's layer per vertex.
        n_planted_layers: layers of the planted network.
        columns: the fit's per-vertex columns in the same vertex order (``layer_argmax``, ``r2_test``,
            ``layer_in_set_XX``, ``layer_set_size``, optionally ``layer_set_size_sampling``).
        cka: array of shape (n_planted_layers, n_fitted_layers).
        noise_ceiling: array of shape (n_vertices,).

    Returns:
        ``relative_depth_spearman`` (planted against shown relative depth), ``r2_over_nc`` (mean test R^2 over
        the mean ceiling), ``counterpart_exact`` (the map shows the counterpart), ``set_coverage`` (the set holds
        it), ``set_coverage_within1`` (or a layer next to it), ``mean_set_size``, ``relative_set_size`` (over the
        fitted layers), ``mean_sampling_set_size`` (resampling noise alone; NaN when not recorded) and
        ``counterpart_cka`` (mean CKA of the planted layer with its counterpart); the set scores are NaN
        for a fit without layer sets.
    """
    n_layers = cka.shape[1]
    counterpart = counterpart_layers(planted_layer, cka)
    shown = np.asarray(columns["layer_argmax"], dtype=np.int64)
    scores = {
        "relative_depth_spearman": float(spearmanr(relative_depth(planted_layer, n_planted_layers),
                                                   relative_depth(shown, n_layers)).statistic),
        "r2_over_nc": float(np.mean(columns["r2_test"]) / np.mean(noise_ceiling)),
        "counterpart_exact": float(np.mean(shown == counterpart)),
        "counterpart_cka": float(np.asarray(cka)[np.asarray(planted_layer, dtype=np.int64), counterpart].mean()),
    }
    if in_set_column(0) not in columns:
        return {**scores, **{name: float("nan") for name in SET_SCORES}}
    in_set = layer_set_matrix(columns, n_layers)
    rows = np.arange(len(counterpart))
    near = np.zeros(len(counterpart), dtype=bool)
    for offset in (-1, 0, 1):
        near |= in_set[rows, np.clip(counterpart + offset, 0, n_layers - 1)]
    sampling = columns.get("layer_set_size_sampling")
    return {**scores,
            "set_coverage": float(in_set[rows, counterpart].mean()),
            "set_coverage_within1": float(near.mean()),
            "mean_set_size": float(in_set.sum(axis=1).mean()),
            "relative_set_size": float(in_set.sum(axis=1).mean() / n_layers),
            "mean_sampling_set_size": float(np.mean(sampling)) if sampling is not None else float("nan")}


def coverage_by_accuracy(planted_layer: np.ndarray, columns: Mapping[str, np.ndarray], cka: np.ndarray,
                         noise_ceiling: np.ndarray, *, edges: Sequence[float] = ACCURACY_EDGES) -> pd.DataFrame:
    """Set coverage of the counterpart and set size per bin of per-vertex test R^2 / noise ceiling.

    Returns:
        one row per non-empty bin: ``r2_over_nc`` (the bin, e.g. ``0.25-0.5``), ``vertices``, ``set_coverage``,
        ``mean_set_size``.
    """
    counterpart = counterpart_layers(planted_layer, cka)
    in_set = layer_set_matrix(columns, cka.shape[1])
    accuracy = np.asarray(columns["r2_test"], dtype=np.float64) / np.maximum(np.asarray(noise_ceiling, np.float64), 1e-12)
    covered = in_set[np.arange(len(counterpart)), counterpart]
    size = in_set.sum(axis=1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (accuracy >= low) & (accuracy < high)
        if inside.any():
            rows.append({"r2_over_nc": _bin_label(low, high), "vertices": int(inside.sum()),
                         "set_coverage": float(covered[inside].mean()), "mean_set_size": float(size[inside].mean())})
    return pd.DataFrame(rows, columns=["r2_over_nc", "vertices", "set_coverage", "mean_set_size"])


def _bin_label(low: float, high: float) -> str:
    if not np.isfinite(low):
        return f"< {high:g}"
    if not np.isfinite(high):
        return f">= {low:g}"
    return f"{low:g}-{high:g}"
