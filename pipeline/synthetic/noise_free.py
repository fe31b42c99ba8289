"""A synthetic subject's planted mechanism applied to images it never saw: its noise-free responses.

A synthetic subject's responses are a function of one feature store's features
(:func:`pipeline.synthetic.responses.generate_signal`). The planted maps and the read-out directions
come from the subject's seeds; three normalisations (per-channel z-scoring, each layer's signal
standardised per vertex, the z-scoring before and after the softplus) take their statistics over the
store's images. :func:`planted_mechanism` rebuilds the maps and directions from the subject's
``planted_truth.json`` and takes those statistics from the subject's own store, held fixed;
:func:`noise_free_responses` then applies the same function to the features of any images. For the
store's own images it gives ``generate_signal``'s signal (the tests check it), so for new images it is
the answer an in-silico prediction should approach: the response without measurement noise.

The statistics need three passes over the subject's store and its (images x vertices) float64 mixture
in memory, like ``generate_signal`` itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cache.errors import InvalidInputError, MissingInputError, StoreMismatchError
from cache.jsondata import to_json_data
from cache.store import FeatureStore
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.geometry import build_region
from pipeline.synthetic.layout import read_truth_record
from pipeline.synthetic.planting import plant_maps
from pipeline.synthetic.responses import (
    PlantedReadout, channel_statistics, fold_statistics, layer_moments, layer_signals, pooling_weights,
)


@dataclass(frozen=True)
class PlantedMechanism:
    """The planted signal as a fixed function of features (statistics of the subject's own store).

    Attributes:
        folded: per layer, the read-out directions with the channel statistics folded in.
        readout: the per-vertex pooling windows, read-out fields and globality.
        grid: the local grid the mechanism pools (the subject's store's finest).
        layer_mean: float64 array of shape (n_layers, n_vertices), each layer signal's mean.
        layer_weight: float64 array of shape (n_layers, n_vertices), planted layer weight / the signal's sd.
        mixture_mean, mixture_sd: float64 arrays of shape (n_vertices,), of the mixture before the softplus.
        output_mean, output_sd: float64 arrays of shape (n_vertices,), after it (0 and 1 when linear).
        nonlinearity: the softplus sharpness k (0 = linear).
        batch_size: images per feature batch.
    """

    folded: list[tuple[np.ndarray, ...]]
    readout: PlantedReadout
    grid: int
    layer_mean: np.ndarray
    layer_weight: np.ndarray
    mixture_mean: np.ndarray
    mixture_sd: np.ndarray
    output_mean: np.ndarray
    output_sd: np.ndarray
    nonlinearity: float
    batch_size: int

    def mixture(self, store: FeatureStore, image_ids: Sequence[str]) -> np.ndarray:
        """The standardised layer mixture before the softplus, float64 array of shape (n_images, n_vertices)."""
        if self.grid not in store.grids:
            raise StoreMismatchError(f"feature store {store.path} holds grids {list(store.grids)}; the planted "
                                     f"mechanism pools the {self.grid}x{self.grid} grid")
        out = np.zeros((len(image_ids), self.layer_mean.shape[1]))
        for batch in store.iter_batches(list(image_ids), batch_size=self.batch_size, grid=self.grid):
            signals = layer_signals(batch, self.folded, self.readout)
            out[batch.positions] = np.einsum("lbn,ln->bn", signals - self.layer_mean[:, None, :], self.layer_weight)
        return out


def planted_mechanism(folder: Path, store: FeatureStore) -> PlantedMechanism:
    """The planted mechanism of the synthetic subject in ``folder``, with the statistics of ``store``, the feature
    store the subject was generated from (checked against the identity its truth records).

    Raises:
        MissingInputError: ``folder`` holds no ``planted_truth.json``.
        StoreMismatchError: ``store`` is not the store the subject was generated from.
    """
    record = read_truth_record(Path(folder))
    if record is None or "request" not in record:
        raise MissingInputError(f"{folder} holds no readable planted_truth.json: it is not a synthetic subject")
    if to_json_data(store.identity()) != record["request"]["store"]:
        raise StoreMismatchError(f"feature store {store.path} is not the one {folder} was generated from "
                                 f"({record['store']['path']}); its statistics would define another mechanism")
    cfg = SyntheticConfig(**{key: tuple(value) if isinstance(value, list) else value
                             for key, value in record["config"].items()})
    seeds = np.random.SeedSequence([int(record["request"]["seed"]), int(record["request"]["subject"])]).spawn(4)
    geometry_rng, maps_rng, readout_rng = (np.random.default_rng(s) for s in seeds[:3])   # generate.py's streams
    maps = plant_maps(build_region(cfg, geometry_rng), n_layers=store.n_layers, cfg=cfg, rng=maps_rng)
    grid = max(store.grids)
    ids = list(store.image_ids)
    stats = channel_statistics(store, ids, grid=grid, batch_size=cfg.batch_size)
    directions = [readout_rng.normal(0.0, 1.0, (cfg.n_readouts, c)) / np.sqrt(c) for c in store.n_channels]
    readout = PlantedReadout.of(maps, pooling_weights(maps.space, maps.rf_size, grid=grid))
    folded = fold_statistics(directions, stats)
    mean, std, _ = layer_moments(store, ids, folded, readout, grid=grid, batch_size=cfg.batch_size)
    unit = np.zeros(maps.space.shape[0])
    mechanism = PlantedMechanism(folded=folded, readout=readout, grid=grid, layer_mean=mean,
                                 layer_weight=maps.layer_weights.T / np.maximum(std, 1e-12), mixture_mean=unit,
                                 mixture_sd=unit + 1, output_mean=unit, output_sd=unit + 1,
                                 nonlinearity=float(cfg.nonlinearity), batch_size=cfg.batch_size)
    mixture = mechanism.mixture(store, ids)
    mixture_mean, mixture_sd = _moments(mixture)
    output = _softplus((mixture - mixture_mean) / mixture_sd, mechanism.nonlinearity)
    output_mean, output_sd = _moments(output)
    return dataclasses.replace(mechanism, mixture_mean=mixture_mean, mixture_sd=mixture_sd, output_mean=output_mean,
                               output_sd=output_sd)


def noise_free_responses(mechanism: PlantedMechanism, store: FeatureStore, image_ids: Sequence[str]) -> np.ndarray:
    """The planted subject's noise-free responses to ``image_ids`` of ``store`` (features of the subject's model,
    extracted with its store's recipe): float32 array of shape (n_images, n_vertices), in the units of the
    subject's signal (unit variance over its own store's images)."""
    if len(image_ids) == 0:
        raise InvalidInputError("no images to compute the planted responses of")
    standardised = (mechanism.mixture(store, image_ids) - mechanism.mixture_mean) / mechanism.mixture_sd
    output = _softplus(standardised, mechanism.nonlinearity)
    return ((output - mechanism.output_mean) / mechanism.output_sd).astype(np.float32)


def _moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and population sd (at least 1e-12), as ``responses._standardised`` uses them."""
    mean = values.mean(axis=0)
    return mean, np.maximum((values - mean).std(axis=0), 1e-12)


def _softplus(values: np.ndarray, sharpness: float) -> np.ndarray:
    """``softplus(k x) / k``, the identity when ``k`` is 0."""
    return np.logaddexp(0.0, sharpness * values) / sharpness if sharpness > 0 else values
