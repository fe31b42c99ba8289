"""How alike two networks' layers are on the same images: linear CKA between every pair of layers.

A layer of one network has a counterpart in another only in the sense of representational
similarity: the layer whose features, over the same images, span the most similar image
geometry. Linear centred kernel alignment (CKA; Kornblith et al. 2019) measures it and is
invariant to rotations and isotropic scaling of either feature space, so layers of different
widths and networks of different depths compare directly. It is the truth against which a fit
of one network to responses made from another is judged: the counterpart of the planted layer
is the fitted network's layer of highest CKA with it.

Each layer is represented as stage two's layer scores see it (``stages.fit.pooled_features``,
the same pooling): its global token and its local tokens average-pooled to ``local_pool x local_pool``, every
column z-scored over the images (constant columns dropped). CKA is computed from the
images' centred kernels, ``n_images x n_images`` per layer, so memory and time grow with the
images squared, not with the channels: use it on a subject's few thousand training images, not
on a whole store of tens of thousands.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cache.errors import InvalidInputError
from cache.store import FeatureStore
from stages.fit.pooled_features import pooled_sets

#: Images beyond which the (n_images x n_images) float64 kernels of every layer grow past ~1 GB for 19 layers.
MAX_IMAGES = 2500


def layer_kernels(store: FeatureStore, image_ids: Sequence[str], *, layers: Sequence[int] | None = None,
                  grid: int = 8, local_pool: int = 2, batch_size: int = 256) -> list[np.ndarray]:
    """Each layer's centred, unit-norm linear image kernel over ``image_ids``.

    Args:
        store: the feature store holding every image.
        image_ids: the images (at most ``MAX_IMAGES``).
        layers: store indices of the layers (``None``: every layer).
        grid: the stored local grid to read.
        local_pool: side of the average-pooled local grid joined to the global token.

    Returns:
        one float64 array of shape (n_images, n_images) per layer, centred on both sides and of
        Frobenius norm 1 (zero where a layer's features are constant over the images).

    Raises:
        InvalidInputError: fewer than 3 images, or more than ``MAX_IMAGES``.
    """
    if not 3 <= len(image_ids) <= MAX_IMAGES:
        raise InvalidInputError(f"layer similarity needs 3..{MAX_IMAGES} images, got {len(image_ids)}; "
                                f"pass a subject's training images or a sample of them")
    indices = list(range(store.n_layers)) if layers is None else [int(layer) for layer in layers]
    features: list[list[np.ndarray]] = [[] for _ in indices]
    order = np.empty(len(image_ids), dtype=np.int64)
    filled = 0
    for batch in store.iter_batches(list(image_ids), batch_size=batch_size, grid=grid, layers=indices):
        order[filled:filled + len(batch)] = batch.positions
        filled += len(batch)
        for slot in range(len(indices)):
            sets = pooled_sets(batch.global_[slot], batch.local[slot], local_pool=local_pool,
                               feature_sets=("global", "local"), device=torch.device("cpu"))
            features[slot].append(torch.cat([sets["global"], sets["local"]], dim=1).numpy())
    inverse = np.argsort(order)
    return [_centred_kernel(np.concatenate(parts)[inverse]) for parts in features]


def cka_matrix(kernels_a: Sequence[np.ndarray], kernels_b: Sequence[np.ndarray]) -> np.ndarray:
    """Linear CKA of every layer of one network (rows) with every layer of another (columns).

    Args:
        kernels_a, kernels_b: the two networks' :func:`layer_kernels` over the same images, in the same order.

    Returns:
        float64 array of shape (n_layers_a, n_layers_b) in 0..1.
    """
    if kernels_a and kernels_b and kernels_a[0].shape != kernels_b[0].shape:
        raise InvalidInputError(f"kernels over different images: {kernels_a[0].shape} against {kernels_b[0].shape}")
    stacked_a = np.stack([kernel.ravel() for kernel in kernels_a])
    stacked_b = np.stack([kernel.ravel() for kernel in kernels_b])
    return np.clip(stacked_a @ stacked_b.T, 0.0, 1.0)


def matched_layers(cka: np.ndarray) -> np.ndarray:
    """For each row layer, the column layer of highest CKA: int array of shape (n_layers_a,)."""
    return np.asarray(cka).argmax(axis=1)


def _centred_kernel(features: np.ndarray) -> np.ndarray:
    """``H Z Z^T H`` of the column-z-scored features ``Z`` (n_images, n_features), scaled to unit Frobenius norm."""
    wide = features.astype(np.float64)
    wide -= wide.mean(axis=0)
    std = wide.std(axis=0)
    wide = wide[:, std > 0] / std[std > 0]
    kernel = wide @ wide.T
    norm = np.linalg.norm(kernel)
    return kernel / norm if norm > 0 else kernel
