"""Comparing fits: a grid of maps (rows = fits, columns = maps), the subject average of a
model's fits, the difference between two fits of the same subject, and whether their
hierarchy scores differ beyond their bootstrap intervals.

Subjects are aligned through fsaverage: a vertex is the pair (hemisphere, fsaverage_index),
so fits of different subjects share every vertex both of them have.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cache.errors import InvalidInputError
from stages.fit.result import FitResult, layer_summary, layer_weight_column
from stages.mesh import CorticalMesh
from stages.report.colours import DIFFERENCE_CMAP
from stages.report.figures import render_map
from stages.report.intervals import intervals_overlap
from stages.report.maps import VertexMap, fit_maps
from stages.report.summaries import score_hierarchy

#: Offset separating right-hemisphere vertex keys from left ones.
_RH_OFFSET = 1 << 40
#: Per-vertex columns averaged across subjects (besides the layer weights).
AVERAGED_COLUMNS = ("space_x", "space_y", "scale", "r2_test", "r2_val", "r2_test_nc", "r2_val_nc", "noise_ceiling",
                    "layer_confidence", "layer_set_size")


def fit_label(fit: FitResult) -> str:
    """Short row label of a fit: ``model / subject (method)``."""
    return f"{fit.model} / {fit.subject} ({fit.method})"


def render_comparison_grid(fits: Sequence[FitResult], flat: CorticalMesh, *,
                           maps: Sequence[str] = ("layer", "space", "scale"), panel_width: float = 4.0,
                           resolution: int = 600, space_extent: float = 1.0) -> Figure:
    """One row per fit, one column per map name (a map a fit lacks leaves its panel empty); ``resolution``
    is each panel's raster width, ``space_extent`` the space maps' shared colour-square extent."""
    if not fits:
        raise InvalidInputError("render_comparison_grid needs at least one fit")
    figure = Figure(figsize=(panel_width * len(maps), 0.45 * panel_width * len(fits) + 0.3), layout="constrained")
    axes = figure.subplots(len(fits), len(maps), squeeze=False)
    for row, fit in zip(axes, fits):
        available = {vertex_map.name: vertex_map for vertex_map in fit_maps(fit, space_extent=space_extent)}
        for ax, name in zip(row, maps):
            if name in available:
                render_map(fit, available[name], flat, rois=False, title=f"{fit_label(fit)}: {name}",
                           resolution=resolution, ax=ax)
                ax.title.set_fontsize(7)
            else:
                ax.set_axis_off()
                ax.set_title(f"{fit_label(fit)}: no {name}", fontsize=7)
    return figure


def average_fits(fits: Sequence[FitResult]) -> FitResult:
    """The per-vertex average of several subjects' fits of one model (method ``"average"``).

    Each fsaverage vertex any fit covers gets the mean over the fits that cover it of the
    layer weights (then argmax, entropy, mean layer recomputed from the mean weights), the
    space point, scale and available scores. ``roi`` comes from the first fit naming one.
    """
    if not fits:
        raise InvalidInputError("average_fits needs at least one fit")
    models = {fit.model for fit in fits}
    layers = {fit.layer_names for fit in fits}
    if len(models) != 1 or len(layers) != 1:
        raise InvalidInputError(f"subject averages need fits of one model with the same layers; got models "
                                f"{sorted(models)}")
    keys = [_vertex_keys(fit) for fit in fits]
    union = np.unique(np.concatenate(keys))
    n_layers = len(fits[0].layer_names)
    columns = ["weights", *[c for c in AVERAGED_COLUMNS if all(c in fit.vertices for fit in fits)]]
    sums = {"weights": np.zeros((len(union), n_layers))}
    sums.update({c: np.zeros(len(union)) for c in columns[1:]})
    counts = np.zeros(len(union))
    roi = np.full(len(union), "", dtype=object)
    for fit, key in zip(fits, keys):
        position = np.searchsorted(union, key)
        sums["weights"][position] += fit.layer_weights
        for column in columns[1:]:
            sums[column][position] += np.asarray(fit.vertices[column], dtype=np.float64)
        counts[position] += 1
        labels = np.asarray(fit.vertices["roi"]).astype(str)
        unset = (roi[position] == "") & (labels != "")
        roi[position[unset]] = labels[unset]
    weights = sums["weights"] / counts[:, None]
    vertices = {"vertex": np.arange(len(union)), "hemisphere": np.where(union >= _RH_OFFSET, "rh", "lh"),
                "fsaverage_index": union % _RH_OFFSET, "roi": roi.astype(str), "n_subjects": counts.astype(np.int32)}
    vertices.update({layer_weight_column(i): weights[:, i].astype(np.float32) for i in range(n_layers)})
    vertices.update(layer_summary(weights))
    vertices.update({c: (sums[c] / counts).astype(np.float32) for c in columns[1:]})
    return FitResult(method="average", subject=f"average of {len(fits)}", model=fits[0].model,
                     layer_names=fits[0].layer_names, vertices=vertices,
                     metrics={"subjects": [fit.subject for fit in fits]},
                     provenance={"averaged": [fit.provenance for fit in fits]})


def difference_maps(before: FitResult, after: FitResult) -> tuple[FitResult, list[VertexMap]]:
    """``after - before`` on the vertices both fits share (e.g. a model before/after fine-tuning).

    Returns:
        The ``after`` fit restricted to the shared vertices (for placement and ROIs) and the
        difference maps: mean selected layer as a fraction of depth, scale, the selected
        image point's shift (distance in image units) and, where both have it, test R².
    """
    key_before, key_after = _vertex_keys(before), _vertex_keys(after)
    shared, in_before, in_after = np.intersect1d(key_before, key_after, return_indices=True)
    if len(shared) == 0:
        raise InvalidInputError(f"{fit_label(before)} and {fit_label(after)} share no fsaverage vertex")
    subset = FitResult(method="difference", subject=after.subject, model=f"{after.model} - {before.model}",
                       layer_names=after.layer_names,
                       vertices={name: np.asarray(values)[in_after] for name, values in after.vertices.items()})

    def column(fit: FitResult, name: str, rows: np.ndarray) -> np.ndarray:
        return np.asarray(fit.vertices[name], dtype=np.float64)[rows]

    depth = (column(after, "layer_mean", in_after) / max(len(after.layer_names) - 1, 1)
             - column(before, "layer_mean", in_before) / max(len(before.layer_names) - 1, 1))
    shift = np.hypot(column(after, "space_x", in_after) - column(before, "space_x", in_before),
                     column(after, "space_y", in_after) - column(before, "space_y", in_before))
    maps = [VertexMap("diff_depth", "Δ mean layer (fraction of depth)", depth, cmap=DIFFERENCE_CMAP, vmin=-1, vmax=1,
                      label="Δ depth"),
            VertexMap("diff_scale", "Δ scale", column(after, "scale", in_after) - column(before, "scale", in_before),
                      cmap=DIFFERENCE_CMAP, vmin=-1, vmax=1, label="Δ scale"),
            VertexMap("diff_space", "space shift (image units)", shift, cmap="magma", vmin=0, vmax=2, label="shift")]
    if "r2_test" in before.vertices and "r2_test" in after.vertices:
        maps.append(VertexMap("diff_r2_test", "Δ R² (test)", column(after, "r2_test", in_after)
                              - column(before, "r2_test", in_before), cmap=DIFFERENCE_CMAP, vmin=-0.5, vmax=0.5,
                              label="Δ R²"))
    return subset, maps


def render_difference(before: FitResult, after: FitResult, flat: CorticalMesh, *, resolution: int = 600) -> Figure:
    """All difference maps of :func:`difference_maps` in one row (``resolution``: raster width per panel)."""
    subset, maps = difference_maps(before, after)
    figure = Figure(figsize=(4.0 * len(maps), 2.2), layout="constrained")
    axes = figure.subplots(1, len(maps), squeeze=False)[0]
    for ax, vertex_map in zip(axes, maps):
        render_map(subset, vertex_map, flat, rois=False, resolution=resolution, ax=ax)
    figure.suptitle(f"{fit_label(after)} minus {fit_label(before)}", fontsize=9)
    return figure


def align_vertices(source: FitResult, target: FitResult) -> np.ndarray:
    """For each vertex of ``target``, the row of ``source`` at the same fsaverage vertex, or -1:
    int64 array of shape (target.n_vertices,)."""
    source_keys, target_keys = _vertex_keys(source), _vertex_keys(target)
    if len(source_keys) == 0:
        return np.full(len(target_keys), -1, dtype=np.int64)
    order = np.argsort(source_keys)
    rows = order[np.minimum(np.searchsorted(source_keys, target_keys, sorter=order), len(order) - 1)]
    return np.where(source_keys[rows] == target_keys, rows, -1).astype(np.int64)
def compare_hierarchy_scores(fits: Sequence[FitResult], *, alpha: float | None = None) -> pd.DataFrame:
    """Every pair of fits' hierarchy scores with their 95 % bootstrap intervals and whether they differ beyond them.

    Columns: ``first``, ``second`` (fit labels), ``spearman_first``, ``low_first``, ``high_first``, the same for
    ``second``, ``difference`` (second minus first) and ``differ`` (True when the two intervals do not
    overlap; False when they overlap or either score is undefined). ``alpha`` keeps only vertices
    significant at that false discovery rate (see :func:`stages.report.summaries.score_hierarchy`).
    """
    scores = [score_hierarchy(fit, alpha=alpha) for fit in fits]
    rows = []
    for i, j in itertools.combinations(range(len(fits)), 2):
        a, b = scores[i], scores[j]
        rows.append({"first": fit_label(fits[i]), "second": fit_label(fits[j]),
                     "spearman_first": a.spearman, "low_first": a.low, "high_first": a.high,
                     "spearman_second": b.spearman, "low_second": b.low, "high_second": b.high,
                     "difference": b.spearman - a.spearman,
                     "differ": not intervals_overlap(a.interval, b.interval) and all(
                         np.isfinite([a.low, a.high, b.low, b.high]))})
    return pd.DataFrame(rows)


def _vertex_keys(fit: FitResult) -> np.ndarray:
    """int64 key per vertex: fsaverage_index, plus a large offset for the right hemisphere."""
    hemisphere = np.asarray(fit.vertices["hemisphere"]).astype(str)
    return np.asarray(fit.vertices["fsaverage_index"], dtype=np.int64) + np.where(hemisphere == "rh", _RH_OFFSET, 0)
