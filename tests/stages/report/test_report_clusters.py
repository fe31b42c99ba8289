"""Channel clusters: exactly n_clusters groups, planted groups recovered, memory without an N x N matrix."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from cache.errors import ConfigError, InvalidInputError
from stages.report.clusters import ClusterConfig, cluster_channels


def _planted_readout(n_vertices: int, *, n_groups: int = 20, n_channels: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_groups, n_channels))
    groups = rng.integers(0, n_groups, n_vertices)
    lengths = rng.uniform(0.5, 3.0, (n_vertices, 1))  # cosine clustering must ignore the row length
    readout = lengths * (directions[groups] + 0.25 * rng.normal(size=(n_vertices, n_channels)))
    return readout.astype(np.float32), groups


def test_exactly_twenty_clusters_recovering_planted_groups() -> None:
    readout, groups = _planted_readout(3000)
    labels = cluster_channels(readout, ClusterConfig(n_centroids=150))
    assert labels.shape == (3000,) and labels.dtype == np.int32
    assert sorted(np.unique(labels)) == list(range(20))
    assert adjusted_rand_score(groups, labels) > 0.9
    sizes = np.bincount(labels)
    assert sizes[0] == sizes.max() and (np.diff(sizes) <= 0).all()


def test_exactly_n_clusters_even_when_the_data_has_fewer_groups() -> None:
    readout, _ = _planted_readout(400, n_groups=5)
    labels = cluster_channels(readout, ClusterConfig(n_clusters=12, n_centroids=30))
    assert len(np.unique(labels)) == 12


def test_peak_memory_stays_far_below_an_n_by_n_matrix() -> None:
    n_vertices = 3000
    readout, _ = _planted_readout(n_vertices)
    tracemalloc.start()
    cluster_channels(readout, ClusterConfig(n_centroids=100, batch_size=512))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.1 * n_vertices * n_vertices * 4  # < a tenth of one float32 N x N similarity matrix


@pytest.mark.slow
def test_forty_thousand_vertices_with_the_reference_thousand_centroids() -> None:
    readout, groups = _planted_readout(40_000, n_channels=128)
    tracemalloc.start()
    labels = cluster_channels(readout)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(np.unique(labels)) == 20
    assert adjusted_rand_score(groups, labels) > 0.9
    assert peak < 500e6  # the N x N matrix alone would be 6.4 GB


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="shape"):
        cluster_channels(np.ones(10))
    with pytest.raises(InvalidInputError, match="NaN"):
        cluster_channels(np.full((50, 4), np.nan))
    with pytest.raises(InvalidInputError, match="cannot split"):
        cluster_channels(np.ones((10, 4)))
    with pytest.raises(InvalidInputError, match="distinct directions"):
        cluster_channels(np.ones((400, 4)), ClusterConfig(n_centroids=40))
    with pytest.raises(ConfigError, match="n_clusters"):
        ClusterConfig(n_clusters=30, n_centroids=20)
