"""How sure a fit's held-out scores are: per-vertex p-values with false-discovery control, and
bootstrap replicates of R^2 over held-out images.

* **p-value** of a vertex: the one-sided test that its test-set prediction is correlated with
  the measured response (H0: no linear relation, rho <= 0). The predictions come from a model
  fitted without the test images, so they are fixed with respect to them, and
  ``t = r sqrt((n - 2) / (1 - r^2))`` follows Student's t with ``n - 2`` degrees of freedom
  under H0 when the responses are normal and independent across images (the exact
  distribution of the permutation test over test images, which the tests check, converges to
  the same). One t-test per vertex, vectorised.
* **q-value** (Benjamini and Hochberg 1995): the smallest false discovery rate at which the
  vertex is declared significant, over all of the fit's vertices; ``q <= alpha`` keeps an
  expected fraction of at most ``alpha`` false discoveries (valid for independent or
  positively dependent tests, the usual case for neighbouring vertices).
* **R^2 replicates**: the test images resampled with replacement ``n_resamples`` times (the
  same draws for every vertex, so spatial correlation is kept); each replicate's R^2 per
  vertex (sklearn's definition on the resampled images). Summaries average them over any
  set of vertices and read intervals from their percentiles
  (:mod:`stages.report.intervals`). Memory: ``n_resamples x n_vertices`` float32.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import t as student_t

from stages.fit.metrics import pearson_r64

#: Image-bootstrap replicates of the test R^2 a fit keeps.
R2_RESAMPLES = 200
#: Vertices handled at once by :func:`bootstrap_r2` (bounds (n_resamples, block) float64 temporaries).
VERTEX_BLOCK = 8192


def correlation_p_values(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """One-sided p-values of Pearson's r > 0 between prediction and target columns (see the module docs).

    Args:
        prediction, target: arrays of shape (n_images, n_vertices), n_images >= 3.

    Returns:
        float64 array of shape (n_vertices,); 1 where either column is constant.
    """
    n = np.shape(prediction)[0]
    if n < 3:
        raise ValueError(f"a correlation test needs at least 3 images, got {n}")
    r, varies = pearson_r64(prediction, target)
    r = np.clip(r, -1.0, 1.0)
    statistic = r * np.sqrt((n - 2) / np.maximum(1.0 - r ** 2, 1e-300))
    values = student_t.sf(statistic, n - 2)
    return np.where(varies, values, 1.0)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values: ``min_{j >= i} p_(j) m / j`` in sorted order, capped at 1.

    Args:
        p_values: array of shape (m,) in [0, 1]; NaN entries stay NaN and do not count in ``m``.

    Returns:
        float64 array of shape (m,).
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    q_values = np.full(p_values.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p_values))
    if len(finite) == 0:
        return q_values
    order = finite[np.argsort(p_values[finite], kind="stable")]
    scaled = p_values[order] * len(order) / np.arange(1, len(order) + 1)
    q_values[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q_values


def bootstrap_r2(prediction: np.ndarray, target: np.ndarray, *, n_resamples: int = R2_RESAMPLES,
                 seed: int = 0) -> np.ndarray:
    """Per-vertex R^2 on ``n_resamples`` resamplings of the images with replacement.

    Args:
        prediction, target: arrays of shape (n_images, n_vertices).
        n_resamples: replicates.
        seed: seeds the resampling (one draw of image counts shared by every vertex).

    Returns:
        float32 array of shape (n_resamples, n_vertices); 0 where a replicate's targets are constant.
    """
    n_images, n_vertices = np.shape(target)
    counts = np.random.default_rng(seed).multinomial(n_images, np.full(n_images, 1.0 / n_images),
                                                     size=n_resamples).astype(np.float64)   # (B, n_images)
    out = np.empty((n_resamples, n_vertices), dtype=np.float32)
    for start in range(0, n_vertices, VERTEX_BLOCK):
        columns = slice(start, start + VERTEX_BLOCK)
        y = np.asarray(target[:, columns], dtype=np.float64)
        residual = counts @ (y - np.asarray(prediction[:, columns], dtype=np.float64)) ** 2
        y = y - y.mean(axis=0)      # the total sum of squares is shift-invariant; centring keeps it accurate
        total = counts @ y ** 2 - (counts @ y) ** 2 / n_images
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, columns] = np.where(total > 1e-12 * np.maximum(counts @ y ** 2, 1e-300),
                                       1.0 - residual / total, 0.0)
    return out
