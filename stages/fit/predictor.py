"""A finished fit as a predictor: its responses to the features of any images (in-silico use).

Every fit method predicts through one interface, :class:`Predictor`: ``predict_blocks`` yields the
predictions of a store's images block by block in the fit's response units, ``layer_indices`` checks
that a store serves the fit. :func:`load_predictor` gives the one a fit folder needs: a
:class:`FitPredictor` for FactorTopy fits (each subject of a joint fit too), a
:class:`~stages.fit.ridge_predictor.RidgePredictor` for ridge and banded-ridge fits (their
``coefficients.safetensors``). The rest of this module is the FactorTopy side.

A fit folder holds everything the read-out needs: the bottlenecks, selector MLPs and read-out
(``weights.safetensors``), each vertex's selections (layer weights, sample point, scale, and the
pyramid levels in ``"pyramid"`` mode) and its training mean and sd (``vertices.parquet``), the
per-layer feature scales (``fit.json``, ``metrics.feature_scales``). :func:`build_predictor`
rebuilds the model and hands it the recorded selections, so the selector MLPs (functions of the
subject's sphere coordinates, which the folder does not hold) need not run; the numbers are the
ones the fit's own per-vertex maps show. Prediction is the fit's own pass,
:func:`stages.fit.train.predict`, over a streamed feature source of the images, one block of
images at a time, so images x vertices is never held beyond one block; each block is returned in
the fit's response units (the z-scoring of the training targets undone).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from cache.errors import InvalidInputError, StoreMismatchError
from cache.store import FeatureStore
from stages.device import resolve_device, resolve_precision
from stages.fit.coefficients import read_coefficients
from stages.fit.config import CPU_PRECISIONS, FitConfig
from stages.fit.factortopy import FactorTopy, Selections
from stages.fit.inputs import fitted_layer_indices
from stages.fit.result import FitResult, layer_weight_column
from stages.fit.ridge import RidgeConfig
from stages.fit.ridge_predictor import RidgePredictor
from stages.fit.streaming import open_features
from stages.fit.train import predict
from stages.fit.weights_file import read_state_dict

#: Host memory one block of predictions (and its zero stand-in targets) may take by default (bytes).
BLOCK_BYTES = 256 * 2**20
#: What a prediction's values are, recorded beside every written prediction.
RESPONSE_UNITS = ("the fit's response units: the z-scored prediction times each vertex's training sd plus its "
                  "training mean (the columns train_std and train_mean of the fit's vertices.parquet)")


class Predictor(Protocol):
    """What every fit's predictor offers.

    Attributes:
        device: where the read-out runs.
        precision: its arithmetic (``"float32"``, or an autocast precision).
        units: what the predicted values are, recorded beside every written prediction.
    """

    device: torch.device
    precision: str
    units: str

    @property
    def n_vertices(self) -> int:
        """The fit's number of vertices (columns of every block)."""

    def layer_indices(self, store: FeatureStore) -> list[int]:
        """The store indices of the layers the fit reads; raises StoreMismatchError when ``store`` cannot serve it."""

    def predict_blocks(self, store: FeatureStore, image_ids: Sequence[str], *,
                       block_images: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, float32 array of shape (n_block_images, n_vertices)) in the fit's response units, covering
        ``image_ids`` in order, ``block_images`` images at a time."""


def load_predictor(folder: Path, result: FitResult, cfg: FitConfig | RidgeConfig) -> Predictor:
    """The predictor of the fit in ``folder`` (its table ``result``, its config ``cfg`` with the device to use).

    Raises:
        MissingInputError: the folder lacks the weights or coefficient file.
        InvalidInputError: that file is damaged or does not match the table.
    """
    if isinstance(cfg, RidgeConfig):
        coefficients = read_coefficients(folder, n_vertices=result.n_vertices, layer_names=result.layer_names)
        return RidgePredictor(coefficients, result.layer_names, device=resolve_device(cfg.device),
                              batch_size=cfg.batch_size)
    return build_predictor(read_state_dict(folder), result.vertices, layer_names=result.layer_names, cfg=cfg,
                           scales=result.metrics.get("feature_scales"))


class _RecordedSelections(torch.nn.Module):
    """The trained model evaluated with fixed per-vertex selections instead of its selector MLPs' output."""

    def __init__(self, model: FactorTopy, selections: Selections) -> None:
        super().__init__()
        self.model = model
        self.selections = selections

    def forward(self, local: Sequence[torch.Tensor], global_: Sequence[torch.Tensor], *,
                subject: int = 0) -> torch.Tensor:
        return self.model(local, global_, subject=subject, selections=self.selections)


@dataclass
class FitPredictor:
    """A rebuilt FactorTopy fit, ready to predict.

    Attributes:
        model: the trained model with its recorded selections (see module docs).
        cfg: the fit's config (``device``, ``precision``, ``grid``, ``eval_batch_size`` and ``prefetch`` apply).
        layer_names: the store layers the model reads, in order.
        scales: per layer, the (local, global) factors the fit applied to the features, or None.
        mean, std: float32 arrays of shape (n_vertices,): the training statistics of each vertex.
        device, precision: where and in which precision the read-out runs.
        units: :data:`RESPONSE_UNITS`.
    """

    model: _RecordedSelections
    cfg: FitConfig
    layer_names: tuple[str, ...]
    scales: list[tuple[float, float]] | None
    mean: np.ndarray
    std: np.ndarray
    device: torch.device
    precision: str
    units: str = RESPONSE_UNITS

    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    def layer_indices(self, store: FeatureStore) -> list[int]:
        """The store's index of each fitted layer, after checking that ``store`` serves this fit's features.

        Raises:
            StoreMismatchError: a fitted layer is missing, has another channel width, or the fit's grid is not stored.
        """
        indices = fitted_layer_indices(store, self.layer_names, self.cfg.grid)
        widths = [store.n_channels[index] for index in indices]
        if tuple(widths) != self.model.model.n_channels:
            raise StoreMismatchError(f"feature store {store.path} has channel widths {widths} for the fitted layers; "
                                     f"the fit was trained on {list(self.model.model.n_channels)}")
        return indices

    def predict_blocks(self, store: FeatureStore, image_ids: Sequence[str], *,
                       block_images: int) -> Iterator[tuple[int, np.ndarray]]:
        """Predicted responses to ``image_ids``, ``block_images`` images at a time.

        Yields:
            (start, block): ``block`` is a float32 array of shape (n_block_images, n_vertices) in the fit's
            response units, for the images ``image_ids[start:start + n_block_images]``.
        """
        indices = self.layer_indices(store)
        ids = np.asarray(image_ids)
        for start in range(0, len(ids), max(1, int(block_images))):
            chosen = ids[start:start + block_images]
            stand_in = np.zeros((len(chosen), self.n_vertices), dtype=np.float32)   # shapes the output only
            source = open_features(store, chosen, stand_in, layer_indices=indices, grid=self.cfg.grid,
                                   device=self.device, resident="off", prefetch=self.cfg.prefetch,
                                   scales=self.scales)
            standardised = predict(self.model, source, self.cfg, self.precision)
            yield start, standardised * self.std + self.mean


def block_images_for(n_vertices: int, *, budget_bytes: int = BLOCK_BYTES) -> int:
    """Images per prediction block so one block's predictions and stand-in targets fit ``budget_bytes``."""
    return max(1, int(budget_bytes) // (2 * 4 * max(1, n_vertices)))


def build_predictor(state: Mapping[str, np.ndarray], vertices: Mapping[str, np.ndarray], *,
                    layer_names: Sequence[str], cfg: FitConfig,
                    scales: Sequence[Sequence[float]] | None) -> FitPredictor:
    """Rebuild a trained FactorTopy fit from its weights and per-vertex table.

    Args:
        state: the weights file's tensors by state-dict name (``stages.fit.weights_file.read_state_dict``).
        vertices: the per-vertex table's columns (``layer_weight_XX``, ``space_x``, ``space_y``, ``scale``,
            ``scale_level_XX`` in pyramid mode, ``train_mean``, ``train_std``).
        layer_names: the fitted layers, in order.
        cfg: the fit's config, with the device and precision to predict on.
        scales: the fit's per-layer (local, global) feature scales, or None when it used none.

    Raises:
        InvalidInputError: the weights and the table disagree (layers, vertices) or a column is missing.
    """
    n_layers = len(layer_names)
    widths = []
    for index in range(n_layers):
        weight = state.get(f"global_bottlenecks.{index}.weight")
        if weight is None:
            raise InvalidInputError(f"the weights hold no bottleneck for fitted layer {index} ({layer_names[index]})")
        widths.append(int(weight.shape[1]))
    needed = ["space_x", "space_y", "scale", "train_mean", "train_std"] + [layer_weight_column(i)
                                                                           for i in range(n_layers)]
    absent = [name for name in needed if name not in vertices]
    if absent:
        raise InvalidInputError(f"the per-vertex table lacks {absent}: it is not a FactorTopy fit's table")
    n_vertices = len(vertices["scale"])
    readout = state.get("readouts.0.weight")
    if readout is None or readout.shape[0] != n_vertices:
        raise InvalidInputError(f"the weights' read-out has {None if readout is None else readout.shape[0]} vertices, "
                                f"the table {n_vertices}: they are not from one fit")
    device = resolve_device(cfg.device)
    model = FactorTopy(n_channels=widths, grid=cfg.grid, coords=torch.zeros(n_vertices, 3), cfg=cfg.model)
    model.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in state.items()})
    model.to(device)

    def column(*names: str) -> torch.Tensor:
        values = np.stack([np.asarray(vertices[name], dtype=np.float32) for name in names], axis=1)
        return torch.from_numpy(values).to(device)

    levels = sorted(name for name in vertices if name.startswith("scale_level_"))
    selections = Selections(layer_weights=column(*(layer_weight_column(i) for i in range(n_layers))),
                            space=column("space_x", "space_y"), scale=column("scale")[:, 0],
                            scale_levels=column(*levels) if cfg.model.scale_mode == "pyramid" else None)
    return FitPredictor(model=_RecordedSelections(model, selections), cfg=cfg, layer_names=tuple(layer_names),
                        scales=None if scales is None else [(float(a), float(b)) for a, b in scales],
                        mean=np.asarray(vertices["train_mean"], dtype=np.float32),
                        std=np.asarray(vertices["train_std"], dtype=np.float32), device=device,
                        precision=resolve_precision(cfg.precision, device, cpu_autocast=CPU_PRECISIONS))
