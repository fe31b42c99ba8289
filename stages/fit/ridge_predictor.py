"""A finished ridge or banded-ridge fit as a predictor (the ridge side of ``stages.fit.predictor``).

The fit's ``coefficients.safetensors`` (:mod:`stages.fit.coefficients`) holds each vertex's read-out
in the feature space of its chosen model. :class:`RidgePredictor` reads the images' features from
a store one batch at a time, turns them into the fit's feature blocks with the fit's own transform
and training statistics (:mod:`stages.fit.ridge_features`), and applies each group's weights to the
blocks it reads: ``y = W x + intercept``, already in the fit's response units (ridge fits the raw
responses). Only the layers some group reads are decoded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cache.errors import StoreMismatchError
from cache.store import FeatureStore
from stages.fit.coefficients import Block, RidgeCoefficients
from stages.fit.inputs import fitted_layer_indices
from stages.fit.ridge_features import batch_features

#: What a ridge fit's prediction's values are, recorded beside every written prediction.
RIDGE_UNITS = ("the fit's response units: ridge regresses the responses themselves, so each vertex's prediction "
               "is its read-out of the features plus its intercept (its training mean), with nothing to undo")


@dataclass
class RidgePredictor:
    """A ridge fit's read-out, ready to predict.

    Attributes:
        coefficients: the fit's read-out (groups, normalisations, intercepts).
        layer_names: the fit's layers (a block's layer indexes them).
        device: where the read-out runs.
        batch_size: images per store read.
        precision, units: float32 arithmetic; :data:`RIDGE_UNITS`.
    """

    coefficients: RidgeCoefficients
    layer_names: tuple[str, ...]
    device: torch.device
    batch_size: int = 256
    precision: str = "float32"
    units: str = RIDGE_UNITS

    def __post_init__(self) -> None:
        self._weights = [torch.as_tensor(group.weights, device=self.device) for group in self.coefficients.groups]
        self._columns = [torch.as_tensor(group.vertices, device=self.device) for group in self.coefficients.groups]
        self._intercept = torch.as_tensor(self.coefficients.intercept, dtype=torch.float32, device=self.device)

    @property
    def n_vertices(self) -> int:
        return self.coefficients.n_vertices

    @property
    def read_layers(self) -> list[int]:
        """Positions among :attr:`layer_names` of the layers some group reads, ascending."""
        return sorted({layer for _, layer in self.coefficients.normalisations})

    def layer_indices(self, store: FeatureStore) -> list[int]:
        """The store's index of each layer the read-out uses (:attr:`read_layers`), after checking that ``store``
        serves this fit's features.

        Raises:
            StoreMismatchError: a read layer is missing, a block has another width, or the fit's grid is not stored.
        """
        indices = fitted_layer_indices(store, [self.layer_names[layer] for layer in self.read_layers],
                                       self.coefficients.grid)
        pool = self.coefficients.local_pool
        for (name, layer), norm in self.coefficients.normalisations.items():
            channels = store.n_channels[indices[self.read_layers.index(layer)]]
            width = channels if name == "global" else channels * pool * pool
            if width != norm.mean.shape[0]:
                raise StoreMismatchError(f"feature store {store.path} gives {width} {name} features for layer "
                                         f"{self.layer_names[layer]}; the fit read {norm.mean.shape[0]}")
        return indices

    def predict_blocks(self, store: FeatureStore, image_ids: Sequence[str], *,
                       block_images: int) -> Iterator[tuple[int, np.ndarray]]:
        """Predicted responses in blocks, as :meth:`stages.fit.predictor.Predictor.predict_blocks` (response
        units as they come: the read-out regressed the raw responses)."""
        indices = self.layer_indices(store)
        slot = {layer: position for position, layer in enumerate(self.read_layers)}
        sets = sorted({name for name, _ in self.coefficients.normalisations})
        ids = list(image_ids)
        step = max(1, int(block_images))
        for start in range(0, len(ids), step):
            chosen = ids[start:start + step]
            out = torch.empty(len(chosen), self.n_vertices, dtype=torch.float32, device=self.device)
            for batch in store.iter_batches(chosen, batch_size=self.batch_size, grid=self.coefficients.grid,
                                            layers=indices):
                raw = batch_features(batch, range(len(indices)), local_pool=self.coefficients.local_pool,
                                     feature_sets=sets, device=self.device)
                rows = torch.as_tensor(batch.positions, device=self.device)
                out[rows] = self._read_out(raw, slot)
            yield start, out.cpu().numpy()

    def _read_out(self, raw: dict[str, list[torch.Tensor]], slot: dict[int, int]) -> torch.Tensor:
        """float32 (n_batch, n_vertices): every group's weights on its normalised blocks, plus the intercepts."""
        normalised: dict[Block, torch.Tensor] = {
            (name, layer): norm.apply(raw[name][slot[layer]])
            for (name, layer), norm in self.coefficients.normalisations.items()}
        n_batch = next(iter(normalised.values())).shape[0]
        out = self._intercept.expand(n_batch, -1).clone()
        for group, weights, columns in zip(self.coefficients.groups, self._weights, self._columns):
            features = torch.cat([normalised[block] for block in group.blocks], dim=1)
            out[:, columns] += features @ weights.T
        return out
