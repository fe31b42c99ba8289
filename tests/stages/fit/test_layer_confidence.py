"""Layer sets from a bootstrap of per-image errors: the rule against a plain loop, coverage on a known case."""

from __future__ import annotations

import numpy as np
import torch

from stages.fit.layer_confidence import LayerBootstrap, LayerSets, layer_sets, noise_floor


def plain_sets(errors: np.ndarray, replicates: np.ndarray, level: float,
               allowance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rule vertex by vertex, layer by layer, with numpy's quantile (plus a per-vertex allowance)."""
    n_resamples, n_layers, n_vertices = replicates.shape
    in_set = np.zeros((n_vertices, n_layers), dtype=bool)
    frequency = np.zeros((n_vertices, n_layers))
    for v in range(n_vertices):
        best = int(np.argmin(errors[:, v]))
        for layer in range(n_layers):
            deficit = errors[layer, v] - errors[best, v]
            chance = [(replicates[b, layer, v] - replicates[b, best, v]) - deficit for b in range(n_resamples)]
            in_set[v, layer] = deficit <= np.quantile(chance, level) + (0 if allowance is None else allowance[v])
        for b in range(n_resamples):
            frequency[v, np.argmin(replicates[b, :, v])] += 1 / n_resamples
    return in_set, frequency


def test_sets_match_a_plain_loop():
    rng = np.random.default_rng(0)
    errors = rng.uniform(1.0, 1.1, size=(5, 12))
    replicates = errors[None] + rng.normal(0, 0.03, size=(40, 5, 12))
    sets = layer_sets(torch.as_tensor(errors), torch.as_tensor(replicates), level=0.9)
    in_set, frequency = plain_sets(errors, replicates, 0.9)
    np.testing.assert_array_equal(sets.in_set, in_set)
    np.testing.assert_allclose(sets.best_frequency, frequency, atol=1e-6)
    assert sets.in_set[np.arange(12), errors.argmin(axis=0)].all()   # the observed best is always kept


def simulate(rng: np.random.Generator, margins: np.ndarray, n_images: int, n_vertices: int) -> LayerBootstrap:
    """Per-image squared errors of len(margins) layers sharing an image effect (correlated), layer l worse than
    layer 0 by margins[l] on average; fed to a bootstrap in two batches."""
    n_layers = len(margins)
    bootstrap = LayerBootstrap(n_images, n_layers, n_vertices, n_resamples=200, seed=int(rng.integers(1 << 30)))
    shared = rng.normal(size=(n_images, n_vertices))
    for layer, margin in enumerate(margins):
        residual = shared + 0.5 * rng.normal(size=(n_images, n_vertices))
        squared = residual ** 2 / 1.25 + margin
        for rows in np.array_split(np.arange(n_images), 2):
            bootstrap.add(layer, torch.as_tensor(rows), torch.as_tensor(squared[rows], dtype=torch.float32))
    return bootstrap


def test_the_true_best_layer_is_covered_about_as_often_as_the_level():
    """Coverage of the true best layer (0) over 400 vertices, for margins within the noise (hard case, several
    near-ties), one competitor within the noise, and clear margins (sets of one)."""
    rng = np.random.default_rng(1)
    hard = simulate(rng, np.array([0.0, 0.01, 0.02, 0.03, 0.06]), n_images=400, n_vertices=400).sets(level=0.9)
    coverage = hard.in_set[:, 0].mean()   # near-ties: the best is picked from the same data, a little below 0.9
    assert 0.78 <= coverage <= 0.95
    assert 1.5 < hard.in_set.sum(axis=1).mean() < 4
    pair = simulate(rng, np.array([0.0, 0.03]), n_images=400, n_vertices=400).sets(level=0.9)
    assert pair.in_set[:, 0].mean() >= 0.9 and pair.in_set.sum(axis=1).mean() < 2
    clear = simulate(rng, np.array([0.0, 0.5, 1.0]), n_images=400, n_vertices=100).sets(level=0.9)
    assert clear.in_set[:, 0].all() and (clear.in_set.sum(axis=1) == 1).all()
    assert (clear.best_frequency[:, 0] == 1).all()
    np.testing.assert_allclose(hard.best_frequency.sum(axis=1), 1, atol=1e-6)


def test_one_layer_is_its_own_set_and_json_round_trips():
    one = layer_sets(torch.ones(1, 3), torch.ones(10, 1, 3))
    assert one.in_set.all() and (one.best_frequency == 1).all()
    rng = np.random.default_rng(2)
    in_set = rng.random((6, 4)) < 0.5
    sets = LayerSets(in_set=in_set, best_frequency=rng.random((6, 4)).astype(np.float32), level=0.9, n_resamples=50,
                     sampling_size=np.minimum(in_set.sum(axis=1), 1).astype(np.int32), model_error=0.1)
    back = LayerSets.from_json(sets.to_json())
    np.testing.assert_array_equal(back.in_set, sets.in_set)
    np.testing.assert_array_equal(back.sampling_size, sets.sampling_size)
    assert back.model_error == 0.1
    np.testing.assert_allclose(back.best_frequency, sets.best_frequency, atol=1e-4)
    columns = sets.columns(np.array([0, 1, 2, 3, 0, 1]))
    assert columns["layer_set_size"].tolist() == sets.in_set.sum(axis=1).tolist()
    assert columns["layer_set_size_sampling"].tolist() == sets.sampling_size.tolist()
    assert columns["layer_confidence"][1] == sets.best_frequency[1, 1]
    assert columns["layer_in_set_03"].tolist() == sets.in_set[:, 3].tolist()


def test_the_model_error_allowance_widens_by_the_best_layers_excess_over_the_noise_floor():
    """The allowance is model_error x (best error - floor) per vertex, against the plain loop; no ceiling, no
    allowance; a floor above the best error (a ceiling that is too high) gives none either."""
    rng = np.random.default_rng(3)
    errors = rng.uniform(1.0, 1.2, size=(6, 30))
    replicates = errors[None] + rng.normal(0, 0.02, size=(40, 6, 30))
    floor = rng.uniform(0.2, 1.3, size=30)
    sets = layer_sets(torch.as_tensor(errors), torch.as_tensor(replicates), level=0.9, noise_floor=floor,
                      model_error=0.3)
    allowance = 0.3 * np.maximum(errors.min(axis=0) - floor, 0)
    in_set, _ = plain_sets(errors, replicates, 0.9, allowance)
    np.testing.assert_array_equal(sets.in_set, in_set)
    plain, _ = plain_sets(errors, replicates, 0.9)
    assert sets.sampling_size.tolist() == plain.sum(axis=1).tolist()
    assert sets.in_set.sum() > plain.sum() and sets.model_error == 0.3
    without = layer_sets(torch.as_tensor(errors), torch.as_tensor(replicates), level=0.9, model_error=0.3)
    np.testing.assert_array_equal(without.in_set, plain)
    assert without.model_error == 0.0


def test_noise_floor_is_the_unexplainable_share_of_the_variance():
    assert noise_floor(np.array([2.0, 4.0]), None) is None
    np.testing.assert_allclose(noise_floor(np.array([2.0, 4.0]), np.array([0.25, 1.0], dtype=np.float32)), [1.5, 0.0])


def test_errors_of_some_vertices_add_where_a_whole_row_would():
    rng = np.random.default_rng(4)
    whole, parts = (LayerBootstrap(30, 2, 9, n_resamples=5, seed=2) for _ in range(2))
    errors = torch.as_tensor(rng.random((8, 9)), dtype=torch.float32)
    positions = torch.as_tensor(rng.choice(30, size=8, replace=False))
    whole.add(1, positions, errors)
    split = torch.as_tensor(rng.permutation(9))
    for columns in (split[:4], split[4:]):
        parts.add(1, positions, errors[:, columns], columns=columns)
    torch.testing.assert_close(parts.sums, whole.sums)
    assert parts.sums[:, 0].abs().sum() == 0
