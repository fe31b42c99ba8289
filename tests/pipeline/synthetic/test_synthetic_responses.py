"""Response generation of the synthetic subject: against a plain implementation, and its noise ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from builders import SYNTHETIC_FEATURES, random_store
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.geometry import build_region
from pipeline.synthetic.planting import plant_maps
from pipeline.synthetic import responses
from pipeline.synthetic.responses import channel_statistics, draw_repeats, generate_signal, pooling_weights


def _maps(vertices: int, seed: int = 0, n_layers: int = len(SYNTHETIC_FEATURES["channels"])):
    cfg = SyntheticConfig(vertices_per_hemisphere=vertices, n_readouts=4)
    geometry = build_region(cfg, np.random.default_rng(seed))
    return cfg, plant_maps(geometry, n_layers=n_layers, cfg=cfg, rng=np.random.default_rng(seed + 100))


def _standardised(values: np.ndarray) -> np.ndarray:
    return (values - values.mean(axis=0)) / values.std(axis=0)


def _plain_signal(store, maps, *, n_readouts: int, nonlinearity: float, seed: int) -> np.ndarray:
    """The documented mechanism written out with loops over vertices and grid cells."""
    rng = np.random.default_rng(seed)
    directions = [rng.normal(0.0, 1.0, (n_readouts, c)) / np.sqrt(c) for c in store.n_channels]
    batch = store.read(store.image_ids, grid=max(store.grids))
    grid = max(store.grids)
    mixture = np.zeros((store.n_images, maps.space.shape[0]))
    for layer in range(store.n_layers):
        local = batch.local[layer].astype(np.float64)
        local = (local - local.mean(axis=(0, 2, 3), keepdims=True)) / local.std(axis=(0, 2, 3), keepdims=True)
        global_ = batch.global_[layer].astype(np.float64)
        global_ = (global_ - global_.mean(axis=0)) / global_.std(axis=0)
        signal = np.zeros_like(mixture)
        for vertex in range(maps.space.shape[0]):
            x0, y0 = maps.space[vertex]
            window = np.zeros((grid, grid))
            for row in range(grid):
                for column in range(grid):
                    x, y = (2 * column + 1) / grid - 1, (2 * row + 1) / grid - 1
                    window[row, column] = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * maps.rf_size[vertex] ** 2))
            window /= window.sum()
            pooled = np.einsum("ncij,ij->nc", local, window)
            features = (1 - maps.scale[vertex]) * pooled + maps.scale[vertex] * global_
            signal[:, vertex] = features @ (maps.readout_fields[vertex] @ directions[layer])
        mixture += _standardised(signal) * maps.layer_weights[:, layer]
    mixture = _standardised(mixture)
    return _standardised(np.log1p(np.exp(nonlinearity * mixture)) / nonlinearity)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory):
    return random_store(tmp_path_factory.mktemp("store") / "small.zarr", n_images=150, **SYNTHETIC_FEATURES)


@pytest.mark.parametrize("signals_in_memory", [True, False], ids=["two-passes", "three-passes"])
def test_signal_matches_a_plain_implementation(small_store, signals_in_memory: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if not signals_in_memory:
        monkeypatch.setattr(responses, "SIGNAL_MEMORY_BYTES", 0)
    cfg, maps = _maps(60)
    signal = generate_signal(small_store, small_store.image_ids, maps, n_readouts=cfg.n_readouts, nonlinearity=1.0,
                             batch_size=40, rng=np.random.default_rng(9))
    expected = _plain_signal(small_store, maps, n_readouts=cfg.n_readouts, nonlinearity=1.0, seed=9)
    assert signal.shape == (150, 120) and signal.dtype == np.float32
    assert np.allclose(signal, expected, atol=2e-3)
    assert np.allclose(signal.mean(axis=0), 0, atol=1e-4) and np.allclose(signal.std(axis=0), 1, atol=1e-3)


def test_signal_does_not_depend_on_batch_size_or_row_order(small_store) -> None:
    cfg, maps = _maps(50)
    kwargs = dict(n_readouts=cfg.n_readouts, nonlinearity=0.0)
    whole = generate_signal(small_store, small_store.image_ids, maps, batch_size=150, rng=np.random.default_rng(1), **kwargs)
    small = generate_signal(small_store, small_store.image_ids, maps, batch_size=7, rng=np.random.default_rng(1), **kwargs)
    order = np.random.default_rng(0).permutation(150)
    shuffled = generate_signal(small_store, small_store.image_ids[order], maps, batch_size=32,
                               rng=np.random.default_rng(1), **kwargs)
    assert np.allclose(whole, small, atol=1e-4)
    assert np.allclose(shuffled, whole[order], atol=1e-4)


def test_given_channel_statistics_give_the_same_signal(small_store) -> None:
    cfg, maps = _maps(50)
    kwargs = dict(n_readouts=cfg.n_readouts, nonlinearity=1.0, batch_size=50)
    stats = channel_statistics(small_store, small_store.image_ids, grid=max(small_store.grids), batch_size=50)
    own = generate_signal(small_store, small_store.image_ids, maps, rng=np.random.default_rng(5), **kwargs)
    given = generate_signal(small_store, small_store.image_ids, maps, rng=np.random.default_rng(5), stats=stats, **kwargs)
    assert np.array_equal(own, given)


def test_subjects_differ_and_seeds_reproduce(small_store) -> None:
    cfg, maps = _maps(50)
    _, other_maps = _maps(50, seed=1)
    kwargs = dict(n_readouts=cfg.n_readouts, nonlinearity=1.0, batch_size=64)
    first = generate_signal(small_store, small_store.image_ids, maps, rng=np.random.default_rng(3), **kwargs)
    again = generate_signal(small_store, small_store.image_ids, maps, rng=np.random.default_rng(3), **kwargs)
    other = generate_signal(small_store, small_store.image_ids, other_maps, rng=np.random.default_rng(4), **kwargs)
    assert np.array_equal(first, again)
    correlation = np.mean([np.corrcoef(first[:, v], other[:, v])[0, 1] for v in range(first.shape[1])])
    assert abs(correlation) < 0.5


def test_channel_statistics_match_numpy(small_store) -> None:
    stats = channel_statistics(small_store, small_store.image_ids, grid=8, batch_size=33)
    batch = small_store.read(small_store.image_ids)
    for layer in range(small_store.n_layers):
        local = batch.local[layer].astype(np.float64)
        assert np.allclose(stats.local_mean[layer], local.mean(axis=(0, 2, 3)))
        assert np.allclose(stats.local_std[layer], local.std(axis=(0, 2, 3)), rtol=1e-6)
        assert np.allclose(stats.global_std[layer], batch.global_[layer].astype(np.float64).std(axis=0), rtol=1e-6)


def test_pooling_windows_follow_grid_sample_geometry() -> None:
    grid = 8
    space = np.array([[-0.875, -0.875], [0.125, 0.625], [0.0, 0.0]])  # top-left cell centre; row 6, column 4; middle
    weights = pooling_weights(space, np.array([0.01, 0.01, 5.0]), grid=grid)
    assert weights.shape == (3, 64) and np.allclose(weights.sum(axis=1), 1)
    assert weights[0, 0] == pytest.approx(1.0) and weights[1, 6 * grid + 4] == pytest.approx(1.0)
    assert np.allclose(weights[2], 1 / 64, atol=1e-3)  # a huge window pools evenly


@pytest.fixture(scope="module")
def reliable(tmp_path_factory: pytest.TempPathFactory):
    """Signal of 300 vertices to 1600 images, from a store with a 4x4 grid."""
    store = random_store(tmp_path_factory.mktemp("store") / "large.zarr", n_images=1600, grid=4,
                         **SYNTHETIC_FEATURES)
    cfg, maps = _maps(150)
    signal = generate_signal(store, store.image_ids, maps, n_readouts=cfg.n_readouts, nonlinearity=1.0,
                             batch_size=400, rng=np.random.default_rng(2))
    return signal, maps.noise_ceiling


def test_planted_noise_ceiling_matches_split_half_reliability(reliable) -> None:
    """Tolerance: mean absolute error per vertex < 0.05 and mean bias < 0.015 (1600 images; sampling sd ~0.03)."""
    signal, ceiling = reliable
    repeats = draw_repeats(signal, ceiling, n_repeats=4, rng=np.random.default_rng(0))
    first, second = repeats[:2].mean(axis=0), repeats[2:].mean(axis=0)
    half = np.array([np.corrcoef(first[:, v], second[:, v])[0, 1] for v in range(signal.shape[1])])
    spearman_brown = 2 * half / (1 + half)
    assert np.abs(spearman_brown - ceiling).mean() < 0.05
    assert abs(spearman_brown.mean() - ceiling.mean()) < 0.015
    assert np.corrcoef(spearman_brown, ceiling)[0, 1] > 0.6  # the spatial variation is real


def test_averaged_responses_explain_the_planted_share_of_variance(reliable) -> None:
    signal, ceiling = reliable
    repeats = draw_repeats(signal, ceiling, n_repeats=3, rng=np.random.default_rng(1))
    assert repeats.shape == (3, *signal.shape) and repeats.dtype == np.float32
    average = repeats.mean(axis=0)
    explained = np.array([np.corrcoef(average[:, v], signal[:, v])[0, 1] ** 2 for v in range(signal.shape[1])])
    assert np.abs(explained - ceiling).mean() < 0.05
    single = np.array([np.corrcoef(repeats[0, :, v], signal[:, v])[0, 1] ** 2 for v in range(signal.shape[1])])
    expected_single = ceiling / (ceiling + 3 * (1 - ceiling))  # one trial carries three times the noise
    assert np.abs(single - expected_single).mean() < 0.05
