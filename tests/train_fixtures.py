"""Tiny in-memory inputs for the training tests: a small feature store and a subject with a planted answer.

Each vertex's response is a random read-out of one layer's local tokens at one grid
cell, plus noise, so a fit can be checked against the layer and cell it should find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cache.store import FeatureStore, StoreLayout
from stages.fit import train as train_module
from stages.subject import Subject

CHANNELS = (4, 6, 8)
GRID = 8


def make_store(path: Path, *, n_images: int = 96, channels: tuple[int, ...] = CHANNELS, chunk_images: int = 16,
               seed: int = 0, ids: list[str] | None = None) -> FeatureStore:
    """A complete float32 store of random features, ``chunk_images`` images per chunk."""
    rng = np.random.default_rng(seed)
    ids = ids or [f"demo-{i:05d}" for i in range(n_images)]
    layout = StoreLayout(layer_names=tuple(f"block{i}" for i in range(len(channels))), n_channels=channels,
                         grids=(GRID,), dtype="float32", chunk_images=chunk_images)
    store = FeatureStore.create(path, image_ids=ids, layout=layout, provenance={"model": {"model_id": "fake"}})
    for chunk in range(store.n_chunks):
        rows = store.chunk_rows(chunk)
        n = rows.stop - rows.start
        local = [rng.standard_normal((n, c, GRID, GRID)).astype(np.float32) for c in channels]
        store.write_chunk(chunk, local={GRID: local}, global_=[a.mean(axis=(2, 3)) for a in local])
    return store


def make_subject(store: FeatureStore, *, n_vertices: int = 12, noise: float = 0.3, seed: int = 1,
                 n_val: int = 16, n_test: int = 16, ids: np.ndarray | None = None,
                 token: str = "local") -> tuple[Subject, dict]:
    """A subject whose vertices read planted layers and cells of ``store``; returns it and the truth.

    ``token="global"`` plants read-outs of the global tokens instead (easy to learn fast).
    """
    rng = np.random.default_rng(seed)
    ids = np.asarray(store.image_ids if ids is None else ids)
    features = store.read(ids)
    layers = rng.integers(0, store.n_layers, n_vertices)
    cells = rng.integers(0, GRID, (n_vertices, 2))
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


class Killed(Exception):
    """Raised by :func:`interrupt_after_first_checkpoint` in place of a crash."""


def interrupt_after_first_checkpoint(monkeypatch) -> None:
    """Make training die (:class:`Killed`) right after writing its first epoch's checkpoint."""
    real = train_module.save_checkpoint

    def save_then_die(directory, **kwargs):
        path = real(directory, **kwargs)
        if kwargs["state"].epoch == 1:
            raise Killed()
        return path

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
