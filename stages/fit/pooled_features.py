"""The training images' pooled features, read from the store in one pass and held: the warm start's layer scores.

The per-layer scores (:mod:`stages.fit.layer_scores`) use, per layer, only the global token
and the local tokens average-pooled to ``local_pool x local_pool``: ``(1 + local_pool^2) x
n_channels`` numbers per image, 5 of the 65 the store holds per channel at the 8x8 grid. One
pass over the store reading every layer therefore leaves a copy small enough to keep (at
subj01 scale, 8,882 training images x 12 layers x 768 channels: 0.82 GB in float16, 1.64 GB in
float32, against an 11.8 GB store), and every later pass of the scores (each group of layers'
statistics, the bootstrap's residuals) runs from memory instead of decoding the store again.

When the fit already holds every training image's features (its resident source, on a GPU
or on a large host), :class:`HeldTokens` serves the same batches from them and the store is
not read at all.

Every source of the scores' batches yields the same thing: ``(positions, sets)`` with
``positions`` the training rows of the batch and ``sets[i][name]`` the float32 features of
the ``i``-th requested layer. :class:`PooledFeatures` replays the store's batches in the
order and cuts they were read in, so float32 statistics accumulated from it equal the
streamed ones bit for bit; float16 rounds the pooled local tokens (relative error ~5e-4).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cache.store import FeatureStore

#: A batch of the scores: training rows (n,) and, per requested layer, feature set name -> float32 (n, width).
ScoreBatch = tuple[np.ndarray, list[dict[str, torch.Tensor]]]


def pooled_sets(global_: np.ndarray | torch.Tensor, local: np.ndarray | torch.Tensor, *, local_pool: int,
                feature_sets: Sequence[str], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's global tokens (n, C) and local tokens (n, C, g, g) average-pooled to ``local_pool`` and
    flattened (n, C * local_pool^2), float32 on ``device``, for the names in ``feature_sets``."""
    out = {}
    if "global" in feature_sets:
        out["global"] = torch.as_tensor(global_, device=device).float()
    if "local" in feature_sets:
        tokens = torch.as_tensor(local, device=device).float()
        out["local"] = F.adaptive_avg_pool2d(tokens, local_pool).flatten(1)
    return out


class ProjectedCells:
    """Every training image's local tokens per grid cell, each layer's channels reduced by a random projection,
    held in float16: the per-cell scores' features (:func:`stages.fit.warmstart.cell_scores`).

    Taken from the same store pass as the pooled features when they fit the scores' budget beside them, they
    spare the warm start a second read of the store (at 8,882 training images x 12 layers, 11.8 GB decoded:
    30-38 s on two cores) for 0.44 GB held (8,882 images x 12 layers x 64 cells x 32 components), which the
    host budget leaves room for at subj01 size (37,984 vertices) beside one layer's accumulators. Rounding them
    to float16 changed the per-cell scores there by 2.5e-6 at most (R^2 units).

    Attributes:
        projections: per layer slot, float32 tensor of shape (n_channels_l, n_components).
        values: per layer slot, float16 tensor of shape (n_images, cells, n_components), rows by position;
            None until :meth:`PooledFeatures.read` fills them.
        order: the positions of each batch as the store served them.
    """

    def __init__(self, projections: Sequence[torch.Tensor]) -> None:
        self.projections = list(projections)
        self.values: list[torch.Tensor] | None = None
        self.order: list[np.ndarray] = []

    def nbytes(self, n_images: int, n_cells: int) -> int:
        """Bytes held for ``n_images`` images of ``n_cells`` cells."""
        return 2 * n_images * n_cells * sum(projection.shape[1] for projection in self.projections)

    @staticmethod
    def project(local: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
        """Local tokens (n, C, g, g) to projected cells (n, g * g, n_components), float32, cells row-major."""
        return local.float().flatten(2).transpose(1, 2) @ projection

    def batches(self, slots: Sequence[int]) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
        """The store's batches again, as (positions, per slot float32 (n, cells, n_components)), from memory."""
        for positions in self.order:
            rows = torch.as_tensor(positions, device=self.values[0].device)
            yield positions, [self.values[slot][rows].float() for slot in slots]


def set_widths(store: FeatureStore, layer_index: int, *, local_pool: int) -> dict[str, int]:
    """Features per image of each set of one store layer."""
    return {"global": store.n_channels[layer_index], "local": store.n_channels[layer_index] * local_pool ** 2}


def streamed_batches(store: FeatureStore, image_ids: Sequence[str], *, layer_indices: Sequence[int], grid: int,
                     local_pool: int, feature_sets: Sequence[str], batch_size: int,
                     device: torch.device) -> Iterator[ScoreBatch]:
    """The scores' batches read from the store (one pass over ``image_ids``, only ``layer_indices``)."""
    for batch in store.iter_batches(list(image_ids), batch_size=batch_size, grid=grid, layers=list(layer_indices)):
        yield batch.positions, [pooled_sets(batch.global_[i], batch.local[i], local_pool=local_pool,
                                            feature_sets=feature_sets, device=device)
                                for i in range(len(layer_indices))]


@dataclass(frozen=True)
class HeldTokens:
    """The training images' full features already held by the fit (its resident training source), per scored layer.

    Attributes:
        local: per layer, tensor of shape (n_train, n_channels_l, grid, grid), rows in training order.
        global_: per layer, tensor of shape (n_train, n_channels_l).

    With them the warm start reads nothing: its batches are cut from these tensors in the store's
    batch order (:meth:`cache.store.FeatureStore.batch_order`), so its statistics add up as from a
    streamed pass. Scaled layers (``normalise_layers``) give the same scores up to rounding: the
    regressions standardise every column.
    """

    local: Sequence[torch.Tensor]
    global_: Sequence[torch.Tensor]

    def batches(self, order: Sequence[np.ndarray], slots: Sequence[int], *, local_pool: int,
                feature_sets: Sequence[str]) -> Iterator[ScoreBatch]:
        """The scores' batches of the layers ``slots``, one per entry of ``order`` (training positions)."""
        device = self.local[0].device
        for positions in order:
            rows = torch.as_tensor(positions, device=device)
            yield positions, [pooled_sets(self.global_[slot][rows], self.local[slot][rows], local_pool=local_pool,
                                          feature_sets=feature_sets, device=device) for slot in slots]


class PooledFeatures:
    """Every requested image's pooled feature sets for every layer, held on ``device`` in ``dtype``.

    Attributes:
        order: the positions of each batch as the store served them (replayed by :meth:`batches`).
        sets: per layer (in the order read), set name -> tensor of shape (n_images, width), rows by position.
        dtype: the held dtype (float32: exact; float16: half the memory).
    """

    def __init__(self, order: list[np.ndarray], sets: list[dict[str, torch.Tensor]], dtype: torch.dtype) -> None:
        self.order, self.sets, self.dtype = order, sets, dtype

    @staticmethod
    def nbytes(widths: Sequence[dict[str, int]], n_images: int, *, feature_sets: Sequence[str],
               dtype: torch.dtype) -> int:
        """Bytes held for ``n_images`` images of layers with these set ``widths``."""
        per_image = sum(width[name] for width in widths for name in feature_sets)
        return n_images * per_image * torch.empty(0, dtype=dtype).element_size()

    @classmethod
    def read(cls, store: FeatureStore, image_ids: Sequence[str], *, layer_indices: Sequence[int], grid: int,
             local_pool: int, feature_sets: Sequence[str], batch_size: int, device: torch.device,
             dtype: torch.dtype, cells: ProjectedCells | None = None) -> "PooledFeatures":
        """One pass over the store reading every layer of ``layer_indices``, keeping the pooled sets (and filling
        ``cells`` from the same tokens when given)."""
        widths = [set_widths(store, index, local_pool=local_pool) for index in layer_indices]
        sets = [{name: torch.empty(len(image_ids), width[name], dtype=dtype, device=device) for name in feature_sets}
                for width in widths]
        if cells is not None:
            cells.values = [torch.empty(len(image_ids), grid * grid, projection.shape[1], dtype=torch.float16,
                                        device=device) for projection in cells.projections]
        order = []
        for batch in store.iter_batches(list(image_ids), batch_size=batch_size, grid=grid, layers=list(layer_indices)):
            rows = torch.as_tensor(batch.positions, device=device)
            for slot, held in enumerate(sets):
                local = torch.as_tensor(batch.local[slot], device=device).float()
                values = pooled_sets(batch.global_[slot], local, local_pool=local_pool, feature_sets=feature_sets,
                                     device=device)
                for name, tensor in values.items():
                    held[name][rows] = tensor.to(dtype)
                if cells is not None:
                    cells.values[slot][rows] = cells.project(local, cells.projections[slot]).half()
            order.append(np.asarray(batch.positions))
        if cells is not None:
            cells.order = order
        return cls(order, sets, dtype)

    def batches(self, slots: Sequence[int]) -> Iterator[ScoreBatch]:
        """The store's batches again, from memory, for the held layers ``slots`` (indices into :attr:`sets`)."""
        device = next(iter(self.sets[0].values())).device
        for positions in self.order:
            rows = torch.as_tensor(positions, device=device)
            yield positions, [{name: tensor[rows].float() for name, tensor in self.sets[slot].items()}
                              for slot in slots]
