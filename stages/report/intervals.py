"""Bootstrap intervals of ROI means and of the hierarchy score.

Two sources of uncertainty, each resampled where it arises:

* **Selections** (mean selected layer ``layer_mean``, ``scale``, ``layer_confidence``): the
  vertices of each area are resampled with replacement, ``n_resamples`` times, independently
  per area; the area's mean is recomputed per replicate. This treats an area's vertices as
  exchangeable draws of that area's selections (neighbouring vertices are correlated, so
  the intervals are on the narrow side: read them as a lower bound on the uncertainty).
* **Test R^2**: the fit keeps per-vertex R^2 on bootstrap resamplings of the test images
  (``FitResult.replicates["r2_test"]``, :mod:`stages.fit.significance`); an area's mean over
  its vertices per replicate gives the image-level uncertainty of the area's mean R^2.

Intervals are percentile intervals at ``level`` (0.95: the 2.5th and 97.5th percentiles).
The **hierarchy score** is recomputed on every selection replicate (the areas' resampled mean
layers against their hierarchy ranks), giving its interval. Two fits' hierarchy scores
*differ beyond their intervals* when their intervals do not overlap (a conservative check:
non-overlap of two 95 % intervals is stronger evidence than a 5 % test of the difference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

#: Bootstrap replicates of the vertex resampling.
N_RESAMPLES = 1000
#: Coverage of the reported intervals.
LEVEL = 0.95
#: Per-vertex selection columns whose area means get vertex-bootstrap intervals.
SELECTION_COLUMNS = ("layer_mean", "scale", "layer_confidence")


@dataclass(frozen=True)
class AreaReplicates:
    """Per area (in the summary's row order), bootstrap replicates of its mean of each column.

    Attributes:
        areas: area names.
        means: column name -> float64 array of shape (n_resamples, n_areas); selection columns
            from vertex resampling, ``r2_test`` from the fit's image replicates (when it has them).
    """

    areas: tuple[str, ...]
    means: dict[str, np.ndarray]


def area_replicates(columns: dict[str, np.ndarray], groups: list[np.ndarray], areas: tuple[str, ...], *,
                    image_replicates: dict[str, np.ndarray] | None = None, n_resamples: int = N_RESAMPLES,
                    seed: int = 0) -> AreaReplicates:
    """Bootstrap replicates of each area's mean of each column.

    Args:
        columns: per-vertex values to resample over vertices, name -> array of shape (n_vertices,).
        groups: per area, the int indices of its vertices (non-empty).
        areas: the areas' names, one per group.
        image_replicates: name -> array of shape (n_image_resamples, n_vertices): replicates already
            drawn over images; the area mean is taken per replicate, without vertex resampling.
        n_resamples: vertex-resampling replicates.
        seed: seeds the vertex resampling (the same draws for every column, so replicates pair up).
    """
    rng = np.random.default_rng(seed)
    values = {name: np.asarray(column, dtype=np.float64) for name, column in columns.items()}
    means = {name: np.empty((n_resamples, len(groups))) for name in values}
    for index, group in enumerate(groups):      # one area's draws at a time: memory n_resamples x its vertices
        drawn = group[rng.integers(0, len(group), size=(n_resamples, len(group)))]
        for name, column in values.items():
            means[name][:, index] = column[drawn].mean(axis=1)
    for name, replicates in (image_replicates or {}).items():
        replicates = np.asarray(replicates, dtype=np.float64)
        means[name] = np.stack([replicates[:, group].mean(axis=1) for group in groups], axis=1)
    return AreaReplicates(areas=areas, means=means)


def percentile_interval(replicates: np.ndarray, *, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) percentile interval over axis 0 of ``replicates`` (NaN replicates ignored)."""
    tail = 100.0 * (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):
        low, high = np.nanpercentile(replicates, [tail, 100.0 - tail], axis=0)
    return low, high


def spearman_replicates(ranks: np.ndarray, replicates: np.ndarray) -> np.ndarray:
    """Spearman correlation (ties averaged) of fixed ``ranks`` (n_areas,) with each row of ``replicates``
    (n_resamples, n_areas); NaN for a row with no spread."""
    x = rankdata(ranks)
    y = rankdata(replicates, axis=1)
    x = x - x.mean()
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x ** 2).sum() * (y ** 2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (y @ x) / denominator, np.nan)


def intervals_overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether two (low, high) intervals share a point; False when either is undefined (NaN)."""
    if not all(np.isfinite(first)) or not all(np.isfinite(second)):
        return False
    return bool(first[0] <= second[1] and second[0] <= first[1])
