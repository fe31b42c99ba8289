"""Linear CKA between two stores' layers: the kernel form against the feature form, invariances, counterparts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cache.errors import InvalidInputError
from cache.store import FeatureStore
from stages.features.similarity import cka_matrix, layer_kernels, matched_layers
from tests.builders import DERIVED_SOURCES, SYNTHETIC_FEATURES, derived_store, random_store

def feature_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA in its feature form, ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F), on column-z-scored features."""
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean(0)) / y.std(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def pooled(store: FeatureStore, layer: int) -> np.ndarray:
    features = store.read(list(store.image_ids))
    local = F.adaptive_avg_pool2d(torch.as_tensor(features.local[layer]).float(), 2).flatten(1).numpy()
    return np.concatenate([features.global_[layer], local], axis=1).astype(np.float64)


def test_kernel_cka_equals_the_feature_form_and_finds_each_layers_source(tmp_path: Path):
    source = random_store(tmp_path / "a.zarr", n_images=96, seed=3, **SYNTHETIC_FEATURES)
    derived = derived_store(tmp_path / "b.zarr", source)
    ids = list(source.image_ids)
    cka = cka_matrix(layer_kernels(source, ids), layer_kernels(derived, ids))
    assert cka.shape == (4, 6)
    np.testing.assert_allclose(cka[2, 3], feature_cka(pooled(source, 2), pooled(derived, 3)), rtol=1e-6)
    assert np.argmax(cka[:, 3]) == 2 and all(np.argmax(cka[:, j]) == s for j, s in enumerate(DERIVED_SOURCES))
    assert DERIVED_SOURCES[matched_layers(cka)[1]] == 1


def test_cka_ignores_the_image_order_of_the_request_but_not_a_mismatch(tmp_path: Path):
    source = random_store(tmp_path / "a.zarr", n_images=40, seed=3, **SYNTHETIC_FEATURES)
    ids = list(source.image_ids)
    forward = layer_kernels(source, ids, layers=[1])
    shuffled = list(np.random.default_rng(0).permutation(ids))
    again = layer_kernels(source, shuffled, layers=[1])
    order = [ids.index(i) for i in shuffled]
    np.testing.assert_allclose(again[0], forward[0][np.ix_(order, order)], atol=1e-12)
    np.testing.assert_allclose(cka_matrix(forward, forward), [[1.0]])
    with pytest.raises(InvalidInputError, match="different images"):
        cka_matrix(forward, layer_kernels(source, ids[:20], layers=[1]))
    with pytest.raises(InvalidInputError, match="needs 3"):
        layer_kernels(source, ids[:2])
