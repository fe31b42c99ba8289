"""The ridge baselines' features: one transform of a store batch, shared by the fit and by prediction.

For every layer a ridge reads two feature sets (``stages.fit.ridge``): ``"global"``, the layer's
global token, shape (n_images, n_channels_l); ``"local"``, its local tokens average-pooled to
``local_pool x local_pool`` and flattened channel-major, shape (n_images, n_channels_l *
local_pool**2). Each column is then z-scored with the training images' mean and sd (unbiased) and
divided by the square root of the number of columns (:class:`Normalisation`), so every block's
kernel has mean diagonal ~1. The fit learns the statistics; a prediction applies the recorded ones
to new images, so both go through :func:`batch_features` and :meth:`Normalisation.apply`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cache.store import FeatureBatch
from stages.fit.pooled_features import pooled_sets

FEATURE_SETS = ("global", "local")


def batch_features(batch: FeatureBatch, layer_indices: Sequence[int], *, local_pool: int,
                   feature_sets: Sequence[str] = FEATURE_SETS,
                   device: torch.device = torch.device("cpu")) -> dict[str, list[torch.Tensor]]:
    """Raw ridge features of one store batch, per feature set and layer (the warm start's pooling,
    ``stages.fit.pooled_features.pooled_sets``).

    Args:
        batch: a batch of ``FeatureStore.iter_batches`` (read at the fit's grid).
        layer_indices: indices into the batch's layers, in the fit's order.
        local_pool: side of the pooled local grid.
        feature_sets: which sets to compute.
        device: where the features are made.

    Returns:
        set name -> per layer (in ``layer_indices`` order), float32 tensor of shape (n_batch, n_features_l).
    """
    out: dict[str, list[torch.Tensor]] = {name: [] for name in feature_sets}
    for layer in layer_indices:
        for name, values in pooled_sets(batch.global_[layer], batch.local[layer], local_pool=local_pool,
                                        feature_sets=feature_sets, device=device).items():
            out[name].append(values)
    return out


@dataclass(frozen=True)
class Normalisation:
    """Per-column ``(x - mean) * scale`` of one feature block, with training statistics.

    Attributes:
        mean: float64 tensor of shape (n_features,), the training images' column means.
        scale: float64 tensor of shape (n_features,), ``1 / (sd * sqrt(n_features))`` (sd 0 counted as 1).
    """

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def learn(cls, block: torch.Tensor, train: np.ndarray) -> "Normalisation":
        """Statistics of the rows ``train`` of ``block`` (n_images, n_features)."""
        rows = block[train].double()
        std = rows.std(dim=0)
        return cls(mean=rows.mean(dim=0), scale=1.0 / torch.where(std > 0, std, torch.ones_like(std))
                   / np.sqrt(block.shape[1]))

    def apply(self, block: torch.Tensor) -> torch.Tensor:
        """float32 tensor of ``block``'s shape: the block normalised (computed in float64)."""
        mean, scale = self.mean.to(block.device), self.scale.to(block.device)
        return ((block.double() - mean) * scale).float()
