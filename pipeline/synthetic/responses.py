"""Responses of the synthetic subject, generated from a stage-one feature store.

The mechanism differs on purpose from FactorTopy's own form (point sampling of one
position, a learned bottleneck, a linear read-out), so that recovering the planted maps
is a test, not a tautology:

1. Every channel of every layer is z-scored over the images (local tokens over images
   and grid positions, global tokens over images) in a first pass, so layers of
   different scale contribute fairly.
2. Per layer, ``n_readouts`` random directions in channel space (Gaussian, scaled by
   1/sqrt(n_channels)) are mixed per vertex by its smooth read-out field.
3. Local tokens at the store's finest grid are pooled with a Gaussian window around the
   vertex's receptive-field centre with its planted size (weights over the grid cell
   centres, normalised to sum 1), then mixed with the global token:
   ``(1 - scale) * pooled + scale * global``.
4. Each layer's signal is standardised per vertex over the images (second pass), and the
   layers are mixed with the planted weights (third pass).
5. A mild output nonlinearity ``softplus(k x) / k`` on the standardised mixture, then a
   z-score per vertex: the noise-free signal, unit variance.
6. Noise (:func:`draw_repeats`): ``n_repeats`` noisy trials whose average has the planted
   noise ceiling ``NC = var(signal) / (var(signal) + var(noise of the mean))``, i.e. per
   trial noise variance ``n_repeats * (1 - NC) / NC``.

The store is streamed batch by batch, never loaded whole: three passes, or two when every layer's
signals fit in :data:`SIGNAL_MEMORY_BYTES` and the third pass reads them from memory. The channel
statistics of step 1 are the same for every subject made from one store, so
:func:`generate_signal` takes them from its caller when it has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tqdm import tqdm

from cache.store import FeatureBatch, FeatureStore
from pipeline.synthetic.planting import PlantedMaps

#: Largest (layers x images x vertices) float32 block of per-layer signals kept between two passes.
SIGNAL_MEMORY_BYTES = 1 << 30


@dataclass(frozen=True)
class ChannelStatistics:
    """Per-channel mean and sd of each layer (lists of float64 arrays of shape (n_channels_l,))."""

    local_mean: list[np.ndarray]
    local_std: list[np.ndarray]
    global_mean: list[np.ndarray]
    global_std: list[np.ndarray]


def generate_signal(store: FeatureStore, image_ids: Sequence[str], maps: PlantedMaps, *, n_readouts: int,
                    nonlinearity: float, batch_size: int, rng: np.random.Generator,
                    stats: ChannelStatistics | None = None, progress: bool = False) -> np.ndarray:
    """The noise-free responses of the planted subject to ``image_ids``.

    Args:
        store: a finished feature store holding every id.
        image_ids: the images, in the row order wanted.
        maps: the planted maps; ``layer_weights`` must have one column per store layer.
        n_readouts: random read-out directions per layer (must match ``maps.readout_fields``).
        nonlinearity: softplus sharpness k (0 = linear).
        rng: draws the read-out directions.
        stats: :func:`channel_statistics` of these images at the store's finest grid, when the caller
            already has them (subjects made from one store share them); computed here otherwise.

    Returns:
        float32 array of shape (n_images, n_vertices), zero mean and unit sd per vertex.
    """
    grid = max(store.grids)
    if stats is None:
        stats = channel_statistics(store, image_ids, grid=grid, batch_size=batch_size, progress=progress)
    directions = [rng.normal(0.0, 1.0, (n_readouts, c)) / np.sqrt(c) for c in store.n_channels]
    readout = PlantedReadout.of(maps, pooling_weights(maps.space, maps.rf_size, grid=grid))
    folded = fold_statistics(directions, stats)

    n_layers, n_vertices, n_images = store.n_layers, maps.space.shape[0], len(image_ids)
    # Each layer's signals are needed twice: for their moments, then weighted by them. Kept in memory when
    # small enough (the demo subject: 0.2 GB), they are computed once instead of twice.
    keep = n_layers * n_images * n_vertices * 4 <= SIGNAL_MEMORY_BYTES
    mean, std, kept = layer_moments(store, image_ids, folded, readout, grid=grid, batch_size=batch_size, keep=keep,
                                    progress=progress)
    weight = maps.layer_weights.T / np.maximum(std, 1e-12)  # (n_layers, n_vertices)

    if kept is not None:
        signal_batches = ((rows, kept[:, rows]) for rows in (slice(start, start + batch_size)
                                                             for start in range(0, n_images, batch_size)))
    else:
        signal_batches = ((batch.positions, layer_signals(batch, folded, readout))
                          for batch in _batches(store, image_ids, grid, batch_size, progress, "responses"))
    mixture = np.zeros((n_images, n_vertices), dtype=np.float64)
    for rows, signals in signal_batches:
        mixture[rows] = np.einsum("lbn,ln->bn", signals - mean[:, None, :], weight)
    mixture = _standardised(mixture)
    if nonlinearity > 0:
        mixture = _standardised(np.logaddexp(0.0, nonlinearity * mixture) / nonlinearity)
    return mixture.astype(np.float32)


def layer_moments(store: FeatureStore, image_ids: Sequence[str], folded: list[tuple[np.ndarray, ...]],
                  readout: PlantedReadout, *, grid: int, batch_size: int, keep: bool = False,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Mean and sd over the images of each layer's signal at each vertex (float64 arrays of shape
    (n_layers, n_vertices)), and with ``keep`` the signals themselves (float32, (n_layers, n_images,
    n_vertices), rows in ``image_ids`` order; else None): the statistics that standardise each layer."""
    n_layers, n_vertices, n_images = len(folded), readout.scale.size, len(image_ids)
    kept = np.empty((n_layers, n_images, n_vertices), dtype=np.float32) if keep else None
    total = np.zeros((n_layers, n_vertices))
    total_sq = np.zeros((n_layers, n_vertices))
    for batch in _batches(store, image_ids, grid, batch_size, progress, "layer moments"):
        signals = layer_signals(batch, folded, readout)
        if kept is not None:
            kept[:, batch.positions] = signals
        signals = signals.astype(np.float64)
        total += signals.sum(axis=1)
        total_sq += (signals ** 2).sum(axis=1)
    mean = total / n_images
    return mean, np.sqrt(np.maximum(total_sq / n_images - mean ** 2, 0.0)), kept


def channel_statistics(store: FeatureStore, image_ids: Sequence[str], *, grid: int, batch_size: int,
                       progress: bool = False) -> ChannelStatistics:
    """Per-channel mean and sd over the images (and grid positions, for local tokens), one pass."""
    n = store.n_layers
    sums = {key: [np.zeros(c) for c in store.n_channels] for key in ("local", "local_sq", "global", "global_sq")}
    for batch in _batches(store, image_ids, grid, batch_size, progress, "channel statistics"):
        for layer in range(n):
            local = batch.local[layer].astype(np.float64)
            global_ = batch.global_[layer].astype(np.float64)
            sums["local"][layer] += local.sum(axis=(0, 2, 3))
            sums["local_sq"][layer] += (local ** 2).sum(axis=(0, 2, 3))
            sums["global"][layer] += global_.sum(axis=0)
            sums["global_sq"][layer] += (global_ ** 2).sum(axis=0)
    count_local, count_global = len(image_ids) * grid * grid, len(image_ids)

    def moments(key: str, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        means = [total / count for total in sums[key]]
        stds = [np.sqrt(np.maximum(sq / count - m ** 2, 0.0)) for sq, m in zip(sums[key + "_sq"], means)]
        return means, stds

    local_mean, local_std = moments("local", count_local)
    global_mean, global_std = moments("global", count_global)
    return ChannelStatistics(local_mean, local_std, global_mean, global_std)


def pooling_weights(space: np.ndarray, rf_size: np.ndarray, *, grid: int) -> np.ndarray:
    """Gaussian pooling windows over the grid cell centres (``align_corners=False`` geometry).

    Args:
        space: array of shape (n_vertices, 2): (x, y) centres in [-1, 1].
        rf_size: array of shape (n_vertices,): Gaussian sigma in image units.
        grid: cells per side.

    Returns:
        float32 array of shape (n_vertices, grid * grid), rows summing to 1; cell (row i,
        column j) is entry ``i * grid + j`` (row = y, column = x, as in the stored tokens).
    """
    centres = (2.0 * np.arange(grid) + 1.0) / grid - 1.0
    cell_y, cell_x = np.meshgrid(centres, centres, indexing="ij")
    dx = cell_x.reshape(1, -1) - space[:, :1]
    dy = cell_y.reshape(1, -1) - space[:, 1:2]
    log_weight = -0.5 * (dx ** 2 + dy ** 2) / np.asarray(rf_size, dtype=np.float64)[:, None] ** 2
    weight = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
    return (weight / weight.sum(axis=1, keepdims=True)).astype(np.float32)


def draw_repeats(signal: np.ndarray, noise_ceiling: np.ndarray, *, n_repeats: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Noisy trials whose average over ``n_repeats`` has the given noise ceiling per vertex.

    Args:
        signal: array of shape (n_images, n_vertices) with unit variance per vertex.
        noise_ceiling: array of shape (n_vertices,), fractions in (0, 1).

    Returns:
        float32 array of shape (n_repeats, n_images, n_vertices).
    """
    trial_sd = np.sqrt(n_repeats * (1.0 - noise_ceiling) / noise_ceiling).astype(np.float32)
    noise = rng.standard_normal((n_repeats, *signal.shape), dtype=np.float32) * trial_sd
    return signal[None].astype(np.float32) + noise


def fold_statistics(directions: list[np.ndarray], stats: ChannelStatistics) -> list[tuple[np.ndarray, ...]]:
    """Per layer: directions divided by the channel sds and their offsets, so z-scoring is one matmul."""
    folded = []
    for layer, direction in enumerate(directions):
        local = direction / np.maximum(stats.local_std[layer], 1e-8)
        global_ = direction / np.maximum(stats.global_std[layer], 1e-8)
        folded.append((local.astype(np.float32), (local @ stats.local_mean[layer]).astype(np.float32),
                       global_.astype(np.float32), (global_ @ stats.global_mean[layer]).astype(np.float32)))
    return folded


def layer_signals(batch: FeatureBatch, folded: list[tuple[np.ndarray, ...]], readout: PlantedReadout) -> np.ndarray:
    """float32 array of shape (n_layers, batch, n_vertices): each layer's un-normalised signal."""
    out = np.empty((len(folded), len(batch), readout.scale.size), dtype=np.float32)
    for layer, (local_dir, local_offset, global_dir, global_offset) in enumerate(folded):
        local = batch.local[layer].astype(np.float32)
        tokens = local.reshape(local.shape[0], local.shape[1], -1)                        # (B, C, P)
        projected = np.matmul(local_dir, tokens) - local_offset[None, :, None]             # (B, K, P)
        pooled = projected.reshape(len(batch), -1) @ readout.local                          # (B, N)
        global_ = (batch.global_[layer].astype(np.float32) @ global_dir.T - global_offset) @ readout.global_
        out[layer] = (1.0 - readout.scale) * pooled + readout.scale * global_
    return out


@dataclass(frozen=True)
class PlantedReadout:
    """Layer-independent parts of the read-out, so each layer costs two matrix products.

    ``local``: float32 (n_readouts * grid * grid, n_vertices), entry (k * P + p, n) = field_k(n) * window_n(p);
    ``global_``: float32 (n_readouts, n_vertices) = the fields; ``scale``: float32 (n_vertices,).
    """

    local: np.ndarray
    global_: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, maps: PlantedMaps, pooling: np.ndarray) -> PlantedReadout:
        fields = maps.readout_fields.astype(np.float32)
        local = (fields[:, :, None] * pooling[:, None, :]).reshape(fields.shape[0], -1)
        return cls(local=np.ascontiguousarray(local.T), global_=np.ascontiguousarray(fields.T),
                   scale=maps.scale.astype(np.float32))


def _batches(store: FeatureStore, image_ids: Sequence[str], grid: int, batch_size: int, progress: bool,
             label: str):
    batches = store.iter_batches(image_ids, batch_size=batch_size, grid=grid)
    total = -(-len(image_ids) // batch_size)
    return tqdm(batches, total=total, desc=label, unit="batch", disable=not progress, leave=False)


def _standardised(values: np.ndarray) -> np.ndarray:
    centred = values - values.mean(axis=0, keepdims=True)
    return centred / np.maximum(centred.std(axis=0, keepdims=True), 1e-12)
