"""Ridge baselines: the batched solver against scikit-learn, and the fits on a store with a planted answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge, RidgeCV

from cache.errors import ConfigError, IncompleteStoreError, InvalidInputError, StoreMismatchError
from stages.fit.result import FitResult
from stages.fit.ridge import RidgeConfig, fit_ridge
from stages.fit.ridge_solver import choose_alphas, loo_errors, predict, ridge_coefficients, spectrum_from_features

ALPHAS = np.logspace(-2, 4, 9)
pytestmark = pytest.mark.store(n_images=120)  # enough images for the planted answers


def regression_problem(n_samples: int, n_features: int, n_targets: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, n_features)) + 3.0
    y = x[:, :5] @ rng.normal(size=(5, n_targets)) + 2.0 * rng.normal(size=(n_samples, n_targets)) + 1.0
    return x, y


@pytest.mark.parametrize("shape", [(60, 20), (40, 90)])
def test_coefficients_match_sklearn_ridge(shape: tuple[int, int]) -> None:
    x, y = regression_problem(*shape)
    alphas = np.linspace(0.5, 30.0, y.shape[1])
    coefficients, intercepts = ridge_coefficients(x, y, alphas)
    for target, alpha in enumerate(alphas):
        reference = Ridge(alpha=alpha).fit(x, y[:, target])
        assert np.allclose(coefficients[target], reference.coef_, atol=1e-9)
        assert intercepts[target] == pytest.approx(reference.intercept_, abs=1e-9)


@pytest.mark.parametrize("shape", [(60, 20), (40, 90)])
def test_leave_one_out_alpha_choice_matches_sklearn_ridgecv(shape: tuple[int, int]) -> None:
    x, y = regression_problem(*shape, seed=3)
    reference = RidgeCV(alphas=ALPHAS, alpha_per_target=True, store_cv_results=True).fit(x, y)
    spectrum, projection = spectrum_from_features(torch.as_tensor(x - x.mean(0)))
    centred = torch.as_tensor(y - y.mean(0))
    errors = loo_errors(spectrum, centred, torch.as_tensor(ALPHAS), target_chunk=3)
    assert np.allclose(errors.numpy(), reference.cv_results_.mean(axis=0).T, rtol=1e-8)
    alpha, best = choose_alphas(errors, torch.as_tensor(ALPHAS))
    assert np.allclose(alpha.numpy(), reference.alpha_)
    assert np.allclose(best.numpy(), errors.min(dim=0).values.numpy())
    # held-out predictions with per-target alphas, against sklearn's fitted RidgeCV
    x_new = np.random.default_rng(9).normal(size=(11, shape[1])) + 3.0
    new = predict(spectrum, torch.as_tensor(x_new - x.mean(0)) @ projection, centred, alpha).numpy() + y.mean(0)
    assert np.allclose(new, reference.predict(x_new), atol=1e-8)


def test_ridge_recovers_planted_layers_and_scores(store, make_subject) -> None:
    subject, truth = make_subject(n_vertices=16, token="global", noise=0.3)
    result = fit_ridge(store, subject, RidgeConfig(alphas=(0.01, 0.1, 1.0, 10.0, 100.0)))
    assert result.method == "ridge" and result.layer_names == store.layer_names
    assert (result.vertices["layer_argmax"] == truth["layers"]).mean() >= 0.9
    assert result.vertices["scale"].mean() >= 0.8  # the global token wins where it was planted
    assert np.isnan(result.vertices["space_x"]).all()
    assert np.allclose(result.layer_weights.sum(axis=1), 1.0, atol=1e-6)
    per_layer = np.stack([result.vertices[f"cv_r2_layer_{i:02d}"] for i in range(3)], axis=1)
    assert np.array_equal(per_layer.argmax(axis=1), result.vertices["layer_argmax"])
    assert result.metrics["mean_r2_test"] > 0.2 and np.isfinite(result.vertices["r2_val_nc"]).all()
    assert result.config["method"] == "ridge" and "environment" in result.provenance


def test_ridge_scores_match_an_independent_refit(store, make_subject) -> None:
    """The val predictions of vertex 0 equal an sklearn Ridge refit on its chosen layer with its alpha."""
    subject, _ = make_subject(n_vertices=4, token="global", noise=0.3, seed=4)
    cfg = RidgeConfig(feature_sets=("global",), alphas=(0.1, 1.0, 10.0))
    result = fit_ridge(store, subject, cfg)
    features = store.read(subject.stimulus_ids).global_[int(result.vertices["layer_argmax"][0])].astype(np.float64)
    train, val = subject.splits["train"], subject.splits["val"]
    scaled = (features - features[train].mean(0)) / features[train].std(0, ddof=1) / np.sqrt(features.shape[1])
    refit = Ridge(alpha=float(result.vertices["ridge_alpha"][0])).fit(scaled[train], subject.responses[train, 0])
    prediction = refit.predict(scaled[val])
    target = subject.responses[val, 0]
    expected = 1 - ((target - prediction) ** 2).sum() / ((target - target.mean()) ** 2).sum()
    assert result.vertices["r2_val"][0] == pytest.approx(expected, abs=1e-4)


def test_banded_ridge_weights_the_planted_band(store, make_subject, tmp_path: Path) -> None:
    subject, truth = make_subject(n_vertices=12, token="global", noise=0.3)
    cfg = RidgeConfig(method="banded-ridge", banded_features="global", banded_samples=3, alphas=(0.01, 0.1, 1.0))
    result = fit_ridge(store, subject, cfg)
    assert result.method == "banded-ridge"
    assert np.allclose(result.layer_weights.sum(axis=1), 1.0)
    assert (result.vertices["layer_argmax"] == truth["layers"]).mean() >= 0.8
    assert (result.vertices["scale"] == 1.0).all()
    loaded = FitResult.load(result.save(tmp_path / "fit"))
    assert np.array_equal(loaded.vertices["layer_argmax"], result.vertices["layer_argmax"])


def test_bad_config_and_inputs(store, make_subject) -> None:
    with pytest.raises(ConfigError, match="method"):
        RidgeConfig(method="lasso")
    with pytest.raises(ConfigError, match="feature_sets"):
        RidgeConfig(feature_sets=("cls",))
    with pytest.raises(ConfigError, match="alphas"):
        RidgeConfig(alphas=(0.0, 1.0))
    with pytest.raises(ConfigError, match="banded_features"):
        RidgeConfig(banded_features="all")
    subject, _ = make_subject(n_vertices=4)
    with pytest.raises(StoreMismatchError, match="not in the feature store"):
        fit_ridge(store, subject, RidgeConfig(layers=("block9",)))
    responses = subject.responses.copy()
    responses[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        fit_ridge(store, _replace(subject, responses=responses), RidgeConfig())
    ids = subject.stimulus_ids.copy()
    ids[0] = "demo-99999"
    with pytest.raises(IncompleteStoreError):
        fit_ridge(store, _replace(subject, stimulus_ids=ids), RidgeConfig())


def _replace(subject, **changes):
    from dataclasses import replace

    return replace(subject, **changes)


@pytest.mark.store(n_images=120, channels=(6, 8, 12), smooth=True)
def test_ridge_reports_layer_sets_p_values_and_r2_replicates(store, make_subject, tmp_path):
    """The layer set always holds the chosen (best leave-one-out) layer; p/q-values and the test-R^2 replicates
    come with the fit and survive saving; layer_resamples=0 leaves the layer-set columns out."""
    subject, _ = make_subject(n_vertices=12, noise=0.5, seed=3, n_val=20, n_test=20)
    fit = fit_ridge(store, subject, RidgeConfig(alphas=(0.1, 1.0, 10.0), layer_resamples=50))
    v = fit.vertices
    assert v["layer_shown_in_set"].all() and (v["layer_set_size"] >= 1).all()
    assert ((v["layer_confidence"] >= 0) & (v["layer_confidence"] <= 1)).all()
    in_set = np.stack([v[f"layer_in_set_{i:02d}"] for i in range(3)], axis=1)
    np.testing.assert_array_equal(in_set.sum(axis=1), v["layer_set_size"])
    assert ((v["p_value"] >= 0) & (v["p_value"] <= 1)).all() and (v["q_value"] >= v["p_value"] - 1e-12).all()
    assert fit.replicates["r2_test"].shape == (200, 12)
    loaded = FitResult.load(fit.save(tmp_path / "fit"))
    np.testing.assert_array_equal(loaded.replicates["r2_test"], fit.replicates["r2_test"])
    plain = fit_ridge(store, subject, RidgeConfig(alphas=(0.1, 1.0, 10.0), layer_resamples=0))
    assert "layer_confidence" not in plain.vertices
    with pytest.raises(ConfigError, match="layer_resamples"):
        RidgeConfig(layer_resamples=-1)
