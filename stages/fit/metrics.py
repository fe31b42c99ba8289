"""Per-vertex prediction scores shared by every fitting method.

All functions take arrays of shape (n_images, n_vertices) and return one value
per vertex, so FactorTopy, ridge baselines and reports score predictions alike.
"""

from __future__ import annotations

import numpy as np


def r2_score(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Coefficient of determination per vertex: 1 - SS_res / SS_tot (sklearn's definition).

    Args:
        prediction, target: arrays of shape (n_images, n_vertices).

    Returns:
        float32 array of shape (n_vertices,); vertices with constant targets get 0.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    residual = ((target - prediction) ** 2).sum(axis=0)
    total = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(total > 0, 1.0 - residual / total, 0.0)
    return score.astype(np.float32)


def pearson_r(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson correlation per vertex between prediction and target columns.

    Returns:
        float32 array of shape (n_vertices,); 0 where either column is constant.
    """
    return pearson_r64(prediction, target)[0].astype(np.float32)


def pearson_r64(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation per vertex in float64, and whether both columns vary.

    Returns:
        (r, varies): float64 and bool arrays of shape (n_vertices,); r is 0 where ``varies`` is False.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    p = prediction - prediction.mean(axis=0)
    t = target - target.mean(axis=0)
    denominator = np.sqrt((p**2).sum(axis=0) * (t**2).sum(axis=0))
    varies = denominator > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(varies, (p * t).sum(axis=0) / denominator, 0.0)
    return r, varies


def noise_normalised(score: np.ndarray, noise_ceiling: np.ndarray | None, *, floor: float = 1e-3) -> np.ndarray | None:
    """R^2 as a fraction of the noise ceiling per vertex (NaN where the ceiling is below ``floor``)."""
    if noise_ceiling is None:
        return None
    ceiling = np.asarray(noise_ceiling, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ceiling >= floor, np.asarray(score, dtype=np.float64) / ceiling, np.nan)
    return ratio.astype(np.float32)
