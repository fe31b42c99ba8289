"""Tiny in-memory test inputs shared by every room: random feature stores, planted subjects, image folders.

``conftest.py`` wraps the store and subject builders as the ``store`` / ``subject`` fixtures
(and the ``make_store`` / ``make_subject`` factories); module-scoped fixtures call them directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cache.store import FeatureStore, StoreLayout
from stages.subject import Subject

#: The test folder and the repository root, for subprocesses that import the project and these helpers.
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

#: The features a synthetic subject is planted on: four layers of growing width, spatially smooth
#: tokens of layer-dependent scale and offset, one block of images (``random_store(**SYNTHETIC_FEATURES)``).
SYNTHETIC_FEATURES = {"channels": (8, 16, 24, 32), "smooth": True, "chunk_images": None}


def random_store(path: Path, *, n_images: int = 64, channels: tuple[int, ...] = (4, 6, 8), grid: int = 8,
                 chunk_images: int | None = 16, smooth: bool = False, seed: int = 0,
                 model_id: str = "fake") -> FeatureStore:
    """A finished float32 store of random features, ``chunk_images`` images per chunk (None: the store's choice).

    Image ids are ``demo-00000``...; layers ``block0``...; local tokens on one ``grid`` x ``grid``
    grid, standard normal (``smooth=False``) or smooth with layer-dependent scale and offset;
    each global token is the spatial mean of its layer's local tokens.
    """
    ids = [f"demo-{i:05d}" for i in range(n_images)]
    layout = StoreLayout(layer_names=tuple(f"block{i}" for i in range(len(channels))), n_channels=channels,
                         grids=(grid,), dtype="float32", chunk_images=chunk_images)
    store = FeatureStore.create(path, image_ids=ids, layout=layout, provenance={"model": {"model_id": model_id}})
    rng = np.random.default_rng(seed)
    for chunk in range(store.n_chunks):
        rows = store.chunk_rows(chunk)
        local = [_tokens(rng, rows.stop - rows.start, width, grid, layer, smooth=smooth)
                 for layer, width in enumerate(channels)]
        store.write_chunk(chunk, local={grid: local}, global_=[tokens.mean(axis=(2, 3)) for tokens in local])
    return store


def _tokens(rng: np.random.Generator, n: int, width: int, grid: int, layer: int, *, smooth: bool) -> np.ndarray:
    """float32 array of shape (n, width, grid, grid) of one layer's local tokens."""
    if not smooth:
        return rng.standard_normal((n, width, grid, grid)).astype(np.float32)
    coarse = rng.normal(size=(n, width, 2, 2))
    tokens = np.repeat(np.repeat(coarse, grid // 2, axis=2), grid // 2, axis=3)
    tokens = tokens + 0.5 * rng.normal(size=(n, width, grid, grid))
    return ((layer + 1) * 3.0 * tokens + layer).astype(np.float32)


def random_features(layout: StoreLayout, n_images: int, *, seed: int = 0,
                    dtype: type = np.float64) -> tuple[dict[int, list[np.ndarray]], list[np.ndarray]]:
    """Independent Gaussian features for ``layout``, the oracle of the store tests.

    Returns local[grid][layer] of shape (n_images, n_channels[layer], grid, grid) and
    global_[layer] of shape (n_images, n_channels[layer]), drawn in that order from ``seed``.
    """
    rng = np.random.default_rng(seed)
    local = {grid: [rng.normal(size=(n_images, width, grid, grid)).astype(dtype) for width in layout.n_channels]
             for grid in layout.grids}
    return local, [rng.normal(size=(n_images, width)).astype(dtype) for width in layout.n_channels]


def write_features(store: FeatureStore, local: dict[int, list[np.ndarray]], global_: list[np.ndarray],
                   chunks: list[int] | None = None) -> None:
    """Write features of every store row into the chunks ``chunks`` (default: every pending one)."""
    for chunk in store.pending_chunks() if chunks is None else chunks:
        rows = store.chunk_rows(chunk)
        store.write_chunk(chunk, local={grid: [values[rows] for values in per_layer] for grid, per_layer in local.items()},
                          global_=[values[rows] for values in global_])


def planted_subject(store: FeatureStore, *, n_vertices: int = 6, noise: float = 0.3, seed: int = 1,
                    n_val: int = 16, n_test: int = 16, token: str = "local") -> tuple[Subject, dict]:
    """A subject over every image of ``store`` whose vertices read planted layers and cells; returns it and the truth.

    Each vertex's response is a random read-out of one layer's local tokens at one grid cell
    (``token="global"``: of its global token, easy to learn fast) plus ``noise``, so a fit can
    be checked against ``truth["layers"]`` (n_vertices,) and ``truth["cells"]`` (n_vertices, 2) as (x, y).
    """
    rng = np.random.default_rng(seed)
    ids = np.asarray(store.image_ids)
    features = store.read(ids)
    grid = features.local[0].shape[-1]
    layers = rng.integers(0, store.n_layers, n_vertices)
    cells = rng.integers(0, grid, (n_vertices, 2))
    responses = np.empty((len(ids), n_vertices), dtype=np.float32)
    for v in range(n_vertices):
        if token == "local":
            tokens = features.local[layers[v]][:, :, cells[v, 1], cells[v, 0]]
        else:
            tokens = features.global_[layers[v]]
        responses[:, v] = tokens @ rng.standard_normal(tokens.shape[1]) + noise * rng.standard_normal(len(ids))
    theta = rng.uniform(0, np.pi, n_vertices)
    phi = rng.uniform(0, 2 * np.pi, n_vertices)
    coords = 100 * np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    order = rng.permutation(len(ids))
    splits = {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
              "train": np.sort(order[n_test + n_val:])}
    subject = Subject(name="subj01", stimulus_ids=ids, responses=responses,
                      hemisphere=np.where(np.arange(n_vertices) % 2 == 0, "lh", "rh"),
                      fsaverage_index=np.arange(n_vertices, dtype=np.int64),
                      sphere_coords=coords.astype(np.float32),
                      rois={"V1": np.arange(n_vertices) < n_vertices // 2, "all": np.ones(n_vertices, bool)},
                      splits=splits, split_seed=seed, noise_ceiling=np.full(n_vertices, 0.8, np.float32),
                      mesh="fsaverage5", source={"reader": "test"})
    return subject, {"layers": layers, "cells": cells}


def image_folder(folder: Path, ids: list[str]) -> dict[str, Path]:
    """Tiny distinct PNGs named ``<id>.png``; returns id -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for number, image_id in enumerate(ids):
        pixels = np.full((16, 16, 3), number % 256, dtype=np.uint8)
        pixels[0, 0] = (number // 256, 7, 9)
        files[image_id] = folder / f"{image_id}.png"
        Image.fromarray(pixels).save(files[image_id])
    return files


#: Layers of the derived network: each made from one layer of the source store (its counterpart).
DERIVED_SOURCES = (0, 0, 1, 2, 3, 3)


def derived_store(path: Path, source: FeatureStore, *, seed: int = 5) -> FeatureStore:
    """Another "network" over the same images: layer j is a random rotation-and-stretch of source layer
    DERIVED_SOURCES[j]'s tokens (other width) plus noise."""
    rng = np.random.default_rng(seed)
    features = source.read(list(source.image_ids))
    grid = features.local[0].shape[-1]
    widths = tuple(int(features.local[s].shape[1]) + 4 for s in DERIVED_SOURCES)
    local, global_ = [], []
    for width, layer in zip(widths, DERIVED_SOURCES):
        tokens = features.local[layer].astype(np.float64)
        mixing = rng.normal(size=(width, tokens.shape[1]))
        mixed = np.einsum("wc,ncyx->nwyx", mixing, tokens)
        mixed += 0.3 * mixed.std() * rng.normal(size=mixed.shape)
        local.append(mixed.astype(np.float32))
        global_.append(mixed.mean(axis=(2, 3)).astype(np.float32))
    layout = StoreLayout(layer_names=tuple(f"stage{j}" for j in range(len(DERIVED_SOURCES))), n_channels=widths,
                         grids=(grid,), dtype="float32", chunk_images=None)
    store = FeatureStore.create(path, image_ids=list(source.image_ids), layout=layout,
                                provenance={"model": {"model_id": "derived"}})
    write_features(store, {grid: local}, global_)
    return store
