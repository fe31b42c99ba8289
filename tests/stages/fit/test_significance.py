"""p-values, Benjamini-Hochberg q-values and image-bootstrap R^2, against scipy and plain implementations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control, pearsonr

from stages.fit.metrics import r2_score
from stages.fit.significance import benjamini_hochberg, bootstrap_r2, correlation_p_values


def correlated(rng: np.random.Generator, n_images: int, strengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction = rng.standard_normal((n_images, len(strengths)))
    target = strengths * prediction + rng.standard_normal((n_images, len(strengths)))
    return prediction, target


def test_p_values_equal_scipy_pearsonr_one_sided():
    rng = np.random.default_rng(0)
    prediction, target = correlated(rng, 25, np.linspace(-0.5, 1.0, 12))
    expected = [pearsonr(prediction[:, v], target[:, v], alternative="greater").pvalue for v in range(12)]
    np.testing.assert_allclose(correlation_p_values(prediction, target), expected, rtol=1e-8, atol=1e-12)


def test_p_values_agree_with_a_plain_permutation_test():
    """Shuffling the test images 4,000 times, one vertex at a time: the share of shuffles with r >= observed."""
    rng = np.random.default_rng(1)
    prediction, target = correlated(rng, 40, np.array([0.0, 0.15, 0.3, 0.5]))
    analytic = correlation_p_values(prediction, target)
    for v in range(4):
        observed = np.corrcoef(prediction[:, v], target[:, v])[0, 1]
        shuffled = [np.corrcoef(prediction[:, v], target[rng.permutation(40), v])[0, 1] for _ in range(4000)]
        permutation = (1 + np.sum(np.asarray(shuffled) >= observed)) / 4001
        assert analytic[v] == pytest.approx(permutation, abs=0.02)


def test_p_values_are_uniform_under_the_null_and_one_for_constant_columns():
    rng = np.random.default_rng(2)
    prediction, target = correlated(rng, 30, np.zeros(4000))
    p_values = correlation_p_values(prediction, target)
    assert abs(np.mean(p_values <= 0.05) - 0.05) < 0.012
    assert abs(np.mean(p_values <= 0.5) - 0.5) < 0.03
    constant = correlation_p_values(np.ones((10, 2)), rng.standard_normal((10, 2)))
    np.testing.assert_array_equal(constant, [1.0, 1.0])
    with pytest.raises(ValueError, match="at least 3 images"):
        correlation_p_values(np.ones((2, 1)), np.ones((2, 1)))


def plain_bh(p_values: np.ndarray) -> np.ndarray:
    """q_i = min over j with p_j >= p_i of p_j m / rank_j, a double loop."""
    m = len(p_values)
    ranks = np.argsort(np.argsort(p_values, kind="stable"), kind="stable") + 1
    return np.array([min(min(p_values[j] * m / ranks[j] for j in range(m) if ranks[j] >= ranks[i]), 1.0)
                     for i in range(m)])


def test_benjamini_hochberg_matches_a_plain_loop_and_scipy():
    rng = np.random.default_rng(3)
    p_values = np.concatenate([rng.uniform(size=60), rng.uniform(0, 0.01, size=20), [0.3, 0.3]])
    q_values = benjamini_hochberg(p_values)
    np.testing.assert_allclose(q_values, plain_bh(p_values), rtol=1e-12)
    np.testing.assert_allclose(q_values, false_discovery_control(p_values), rtol=1e-12)
    with_nan = benjamini_hochberg(np.array([0.01, np.nan, 0.04]))
    np.testing.assert_allclose(with_nan, [0.02, np.nan, 0.04])
    assert np.isnan(benjamini_hochberg(np.array([np.nan]))).all()


def test_bootstrap_r2_replicates_equal_r2_on_the_resampled_images():
    rng = np.random.default_rng(4)
    prediction, target = correlated(rng, 30, np.array([0.2, 1.0, 2.0]))
    target = target + 5.0
    replicates = bootstrap_r2(prediction, target, n_resamples=5, seed=7)
    counts = np.random.default_rng(7).multinomial(30, np.full(30, 1 / 30), size=5)
    for b in range(5):
        rows = np.repeat(np.arange(30), counts[b])
        np.testing.assert_allclose(replicates[b], r2_score(prediction[rows], target[rows]), rtol=1e-4, atol=1e-5)


def test_bootstrap_r2_percentile_intervals_cover_the_population_r2():
    """y = x + noise, prediction x: population R^2 = 1 - var(noise) / (1 + var(noise)). 90 % percentile
    intervals from 300 independent vertices (independent data sets) cover it about 90 % of the time."""
    rng = np.random.default_rng(5)
    noise_sd = 1.2
    x = rng.standard_normal((300, 300))
    y = x + noise_sd * rng.standard_normal((300, 300))
    truth = 1 - noise_sd ** 2 / (1 + noise_sd ** 2)
    replicates = bootstrap_r2(x, y, n_resamples=400, seed=1)
    low, high = np.percentile(replicates, [5, 95], axis=0)
    coverage = np.mean((low <= truth) & (truth <= high))
    assert 0.84 <= coverage <= 0.96
