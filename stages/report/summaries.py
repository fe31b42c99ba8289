"""Per-ROI summaries of a fit and its hierarchy score.

ROI names are grouped into canonical areas first: dorsal/ventral halves merge (``V1v`` +
``V1d`` -> ``V1``), ``hV4`` -> ``V4``, numbered parts merge (``FFA-1`` + ``FFA-2`` -> ``FFA``),
and a ``<class>:`` qualifier is dropped.

**Hierarchy rank** of an area: V1 = 1, V2 = 2, V3 = 3, V4 = 4, and every higher
(category-selective or mid/high-level) area of :data:`HIGHER_AREAS` = 5, tied: the visual
hierarchy orders the early areas but not the higher areas among themselves. Areas outside
these lists (e.g. the NSD ``streams`` labels) are summarised but not ranked.

**Hierarchy score** of a fit: Spearman's rank correlation (ties averaged) between the areas'
hierarchy rank and their mean selected layer (the per-vertex expected layer index
``layer_mean`` averaged over the area's vertices), over the ranked areas present (at least 3
and at least two distinct ranks, else NaN). +1: later areas choose deeper layers, exactly
in hierarchy order; 0: no relation. Because the higher areas share one rank, a perfect
ordering scores below 1 when several higher areas are present; the **ceiling** (Spearman of
the ranks against any strictly increasing sequence, e.g. 0.913 for V1-V4 plus five higher
areas) is reported beside it. Reported beside it, the **mean normalised entropy** of
the layer weights over all vertices (0: every vertex picks one layer; 1: uniform weights),
i.e. how decisively layers are chosen.

Every mean comes with a bootstrap interval (:mod:`stages.report.intervals`): selections over
vertices within areas, test R^2 over test images, the hierarchy score over vertices within
areas. With ``alpha``, only vertices whose prediction is significant at that false discovery
rate (``q_value <= alpha``) are summarised.

The score is **depth-invariant**: computed on relative depths (layer / (n_layers - 1)) instead of
layer indices it is the same number, since that rescaling keeps the areas' ranks; scores of
networks with different numbers of layers compare directly (:mod:`stages.report.depth`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from stages.fit.result import FitResult
from stages.report.depth import relative_depth
from stages.report.intervals import (
    LEVEL, N_RESAMPLES, SELECTION_COLUMNS, AreaReplicates, area_replicates, percentile_interval, spearman_replicates,
)

EARLY_AREAS = {"V1": 1, "V2": 2, "V3": 3, "V4": 4}
HIGHER_AREAS = ("EBA", "FBA", "OFA", "FFA", "OPA", "PPA", "RSC", "OWFA", "VWFA", "mTL-bodies", "mTL-faces",
                "aTL-faces", "mfs-words", "mTL-words", "LO", "hMT", "MT", "MST", "V3A", "V3B", "IPS")
HIGHER_RANK = 5
#: Per-vertex score columns summarised per ROI, most preferred first.
SCORE_COLUMNS = ("r2_test", "r2_val")


def canonical_area(roi: str) -> str:
    """The area an ROI label belongs to (``"V1v"`` -> ``"V1"``, ``"FFA-1"`` -> ``"FFA"``); "" stays ""."""
    name = str(roi).split(":")[-1].strip()
    if re.fullmatch(r"V[123][vd]", name):
        return name[:2]
    if name in ("hV4", "V4v", "V4d"):
        return "V4"
    return re.sub(r"-\d+$", "", name)


def hierarchy_rank(area: str) -> float:
    """Rank of an area in the visual hierarchy (1..4 early, 5 higher) or NaN when unranked."""
    if area in EARLY_AREAS:
        return float(EARLY_AREAS[area])
    return float(HIGHER_RANK) if area in HIGHER_AREAS else float("nan")


@dataclass(frozen=True)
class HierarchyScore:
    """Hierarchy score of one fit (see the module docstring).

    Attributes:
        spearman: rank correlation of hierarchy rank vs mean selected layer (NaN if undefined).
        p_value: its two-sided p-value (few areas: interpret with care).
        n_areas: ranked areas that entered the correlation.
        mean_entropy: mean normalised layer entropy over all vertices.
        ceiling: the largest Spearman value these areas' tied ranks allow (NaN if undefined).
        low, high: its ``level`` bootstrap interval over vertices within areas
            (:mod:`stages.report.intervals`; NaN if undefined).
        level: the interval's coverage.
    """

    spearman: float
    p_value: float
    n_areas: int
    mean_entropy: float
    ceiling: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    level: float = LEVEL

    @property
    def interval(self) -> tuple[float, float]:
        return (self.low, self.high)


def kept_vertices(fit: FitResult, alpha: float | None) -> np.ndarray:
    """Bool mask of the vertices summaries use: all, or with ``alpha`` those with ``q_value <= alpha`` (fits
    without q-values, e.g. planted truths, keep all)."""
    if alpha is None or "q_value" not in fit.vertices:
        return np.ones(fit.n_vertices, dtype=bool)
    return np.asarray(fit.vertices["q_value"], dtype=np.float64) <= alpha


def _areas(fit: FitResult, keep: np.ndarray) -> tuple[tuple[str, ...], list[np.ndarray]]:
    """Areas (sorted by name) holding kept vertices, and their kept vertex indices."""
    rois, inverse = np.unique(np.asarray(fit.vertices["roi"]).astype(str), return_inverse=True)
    labels = np.array([canonical_area(roi) for roi in rois], dtype=str)[inverse.ravel()]
    names = tuple(sorted(set(labels[keep].tolist()) - {"", "nan", "none"}))
    return names, [np.flatnonzero((labels == name) & keep) for name in names]


def _replicates(fit: FitResult, areas: tuple[str, ...], groups: list[np.ndarray], *, n_resamples: int,
                seed: int) -> AreaReplicates:
    columns = {name: fit.vertices[name] for name in SELECTION_COLUMNS if name in fit.vertices}
    images = {name: fit.replicates[name] for name in ("r2_test",) if name in fit.replicates}
    return area_replicates(columns, groups, areas, image_replicates=images, n_resamples=n_resamples, seed=seed)


def summarise_rois(fit: FitResult, *, alpha: float | None = None, level: float = LEVEL,
                   n_resamples: int = N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """One row per area: size, hierarchy rank, layer profile and selections, scores, with intervals.

    Columns: ``area``, ``hierarchy_rank``, ``n_vertices`` (summarised), ``n_significant`` (with
    q-values: vertices at ``q <= alpha``, 0.05 when ``alpha`` is None), ``mean_layer`` with its
    ``level`` interval ``mean_layer_low``/``mean_layer_high``, ``mean_relative_depth`` with
    ``mean_relative_depth_low``/``_high`` (the same divided by n_layers - 1: comparable across networks of
    any depth, :mod:`stages.report.depth`), ``sd_layer``, ``mean_entropy``, ``mean_scale``
    (with ``mean_scale_low``/``_high``), ``sd_scale``, with layer sets ``mean_layer_confidence``
    (with interval), ``mean_layer_set_size`` and ``mean_layer_set_size_sampling`` (from resampling
    alone, without the model-error allowance), the mean of each available score column
    (``r2_test``..., ``r2_test_nc``; ``r2_test_low``/``_high`` from the fit's image replicates),
    then ``profile_XX`` and ``profile_sd_XX`` (mean and SD of each layer's weight). Selection
    intervals resample vertices within the area (see :mod:`stages.report.intervals`). With
    ``alpha`` only vertices with ``q_value <= alpha`` are summarised. Rows are ordered by
    hierarchy rank, then name; unranked areas last.
    """
    keep = kept_vertices(fit, alpha)
    areas, groups = _areas(fit, keep)
    replicates = _replicates(fit, areas, groups, n_resamples=n_resamples, seed=seed)
    intervals = {name: percentile_interval(values, level=level) for name, values in replicates.means.items()}
    weights = fit.layer_weights.astype(np.float64)
    n_layers = weights.shape[1]
    scores = [name for name in fit.vertices if name.startswith(SCORE_COLUMNS)]
    q_values = np.asarray(fit.vertices["q_value"], dtype=np.float64) if "q_value" in fit.vertices else None
    rows = []
    for index, (area, inside) in enumerate(zip(areas, groups)):
        layer_mean = np.asarray(fit.vertices["layer_mean"], dtype=np.float64)[inside]
        scale = np.asarray(fit.vertices["scale"], dtype=np.float64)[inside]
        row = {"area": area, "hierarchy_rank": hierarchy_rank(area), "n_vertices": int(len(inside))}
        if q_values is not None:
            row["n_significant"] = int(np.sum(q_values[inside] <= (0.05 if alpha is None else alpha)))
        layer_bounds = _bounds(intervals, "layer_mean", index, "mean_layer")
        row.update({"mean_layer": layer_mean.mean(), **layer_bounds,
                    "mean_relative_depth": float(relative_depth(layer_mean.mean(), n_layers)),
                    **{name.replace("mean_layer", "mean_relative_depth"): float(relative_depth(value, n_layers))
                       for name, value in layer_bounds.items()},
                    "sd_layer": layer_mean.std(),
                    "mean_entropy": float(np.mean(fit.vertices["layer_entropy"][inside])),
                    "mean_scale": scale.mean(), **_bounds(intervals, "scale", index, "mean_scale"),
                    "sd_scale": scale.std()})
        if "layer_confidence" in fit.vertices:
            row["mean_layer_confidence"] = float(np.mean(fit.vertices["layer_confidence"][inside]))
            row.update(_bounds(intervals, "layer_confidence", index, "mean_layer_confidence"))
            row["mean_layer_set_size"] = float(np.mean(fit.vertices["layer_set_size"][inside]))
            if "layer_set_size_sampling" in fit.vertices:
                row["mean_layer_set_size_sampling"] = float(np.mean(fit.vertices["layer_set_size_sampling"][inside]))
        for name in scores:
            values = np.asarray(fit.vertices[name], dtype=np.float64)[inside]
            row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            if name in intervals:
                row.update(_bounds(intervals, name, index, name))
        profile = weights[inside]
        row.update({f"profile_{i:02d}": profile[:, i].mean() for i in range(n_layers)})
        row.update({f"profile_sd_{i:02d}": profile[:, i].std() for i in range(n_layers)})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = table.assign(_unranked=table["hierarchy_rank"].isna()).sort_values(["_unranked", "hierarchy_rank", "area"])
    return order.drop(columns="_unranked").reset_index(drop=True)


def _bounds(intervals: dict[str, tuple[np.ndarray, np.ndarray]], name: str, index: int, prefix: str
            ) -> dict[str, float]:
    if name not in intervals:
        return {}
    low, high = intervals[name]
    return {f"{prefix}_low": float(low[index]), f"{prefix}_high": float(high[index])}


def score_hierarchy(fit: FitResult, summary: pd.DataFrame | None = None, *, alpha: float | None = None,
                    level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = 0) -> HierarchyScore:
    """The hierarchy score with its ``level`` bootstrap interval (vertices resampled within areas) and the mean
    normalised entropy of one fit; ``summary`` (made with the same ``alpha``) is reused when given; with
    ``alpha`` only vertices with ``q_value <= alpha`` count."""
    summary = summarise_rois(fit, alpha=alpha, n_resamples=2, seed=seed) if summary is None else summary
    entropy = float(np.mean(fit.vertices["layer_entropy"]))
    ranked = summary.dropna(subset=["hierarchy_rank"]) if not summary.empty else summary
    if len(ranked) < 3 or ranked["hierarchy_rank"].nunique() < 2 or ranked["mean_layer"].nunique() < 2:
        return HierarchyScore(float("nan"), float("nan"), len(ranked), entropy, level=level)
    result = spearmanr(ranked["hierarchy_rank"], ranked["mean_layer"])
    ceiling = spearmanr(ranked["hierarchy_rank"], np.arange(len(ranked))).statistic
    areas, groups = _areas(fit, kept_vertices(fit, alpha))
    chosen = [areas.index(name) for name in ranked["area"]]
    replicates = area_replicates({"layer_mean": fit.vertices["layer_mean"]}, [groups[i] for i in chosen],
                                 tuple(ranked["area"]), n_resamples=n_resamples, seed=seed)
    low, high = percentile_interval(spearman_replicates(ranked["hierarchy_rank"].to_numpy(),
                                                        replicates.means["layer_mean"]), level=level)
    return HierarchyScore(float(result.statistic), float(result.pvalue), len(ranked), entropy, float(ceiling),
                          float(low), float(high), level)

