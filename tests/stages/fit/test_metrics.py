"""Per-vertex scores agree with scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import r2_score as sklearn_r2

from stages.fit.metrics import noise_normalised, pearson_r, r2_score


def test_r2_and_pearson_match_independent_oracles() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(50, 7))
    prediction = target * 0.5 + rng.normal(size=(50, 7))
    expected_r2 = sklearn_r2(target, prediction, multioutput="raw_values")
    expected_r = [pearsonr(prediction[:, i], target[:, i]).statistic for i in range(7)]
    np.testing.assert_allclose(r2_score(prediction, target), expected_r2, rtol=1e-5)
    np.testing.assert_allclose(pearson_r(prediction, target), expected_r, rtol=1e-5)


def test_constant_columns_score_zero_and_ceiling_floor_gives_nan() -> None:
    target = np.ones((10, 2))
    assert np.all(r2_score(target * 0, target) == 0)
    assert np.all(pearson_r(np.arange(20.0).reshape(10, 2), target) == 0)
    ratio = noise_normalised(np.array([0.2, 0.2]), np.array([0.4, 0.0]))
    assert ratio[0] == np.float32(0.5) and np.isnan(ratio[1])
    assert noise_normalised(np.array([0.2]), None) is None
