"""Streamed per-layer ridge scores (the warm start's evidence): exact GCV, close to leave-one-out, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.fit import layer_statistics
from stages.fit.layer_scores import score_layers
from stages.fit.layer_statistics import ResponseMoments
from stages.fit.ridge import RidgeConfig, fit_ridge

CPU = torch.device("cpu")
ALPHAS = (0.1, 1.0, 10.0, 100.0)


def normalised(features: np.ndarray) -> np.ndarray:
    """Centred, z-scored columns divided by sqrt(n_features): the ridge baseline's normalisation."""
    x = features - features.mean(axis=0)
    std = x.std(axis=0, ddof=1)
    return x / np.where(std > 0, std, 1.0) / np.sqrt(x.shape[1])


def best_score(features: np.ndarray, y: np.ndarray, alphas, *, exact: bool) -> float:
    """Best ``1 - error / var(y)`` from the explicit hat matrix (intercept included): GCV, or exact
    leave-one-out when ``exact``."""
    x, y = normalised(features), y - y.mean()
    n = len(y)
    best = -np.inf
    for alpha in alphas:
        hat = np.full((n, n), 1.0 / n) + x @ np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T)
        residual = y - hat @ y
        if exact:
            error = np.mean((residual / (1 - np.diag(hat))) ** 2)
        else:
            error = np.mean(residual ** 2) / (1 - np.trace(hat) / n) ** 2
        best = max(best, 1 - error / np.mean(y ** 2))
    return best


def train_features(store, subject, layer: int, name: str) -> np.ndarray:
    train = subject.splits["train"]
    batch = store.read(subject.stimulus_ids[train])
    if name == "global":
        return batch.global_[layer].astype(np.float64)
    return F.adaptive_avg_pool2d(torch.as_tensor(batch.local[layer]), 2).flatten(1).double().numpy()


@pytest.mark.store(n_images=96, channels=(6, 40))
@pytest.mark.parametrize("layer, name", [(0, "global"), (1, "global"), (1, "local")])
def test_scores_equal_the_explicit_hat_matrix(store, make_subject, layer, name):
    """Fewer features than training images (64): GCV from the accumulated statistics. Layer 1's local set
    (160 features) takes the image-kernel form: exact leave-one-out."""
    subject, _ = make_subject(n_vertices=5, noise=0.5, n_val=16, n_test=16)
    scores = score_layers(store, subject, layer_indices=[layer], grid=8, device=CPU, alphas=ALPHAS,
                          feature_sets=(name,))
    features = train_features(store, subject, layer, name)
    train = subject.splits["train"]
    exact = features.shape[1] >= len(train)
    for vertex in range(subject.n_vertices):
        expected = best_score(features, subject.responses[train, vertex].astype(np.float64), ALPHAS, exact=exact)
        assert scores[vertex, 0] == pytest.approx(expected, abs=2e-5)


@pytest.mark.store(n_images=240, channels=(6, 8, 12), smooth=True)
def test_scores_agree_with_leave_one_out_and_find_the_planted_layers(store, make_subject):
    subject, truth = make_subject(n_vertices=30, noise=0.5, seed=2, n_val=20, n_test=20)
    cfg = RidgeConfig(alphas=ALPHAS)
    scores = score_layers(store, subject, layer_indices=[0, 1, 2], grid=8, device=CPU, alphas=ALPHAS)
    assert scores.shape == (30, 3) and scores.dtype == np.float32
    loo = fit_ridge(store, subject, cfg).vertices
    exact = np.stack([loo[f"cv_r2_layer_{layer:02d}"] for layer in range(3)], axis=1)
    assert np.corrcoef(scores.ravel(), exact.ravel())[0, 1] > 0.99
    np.testing.assert_array_equal(scores.argmax(axis=1), exact.argmax(axis=1))
    assert (scores.argmax(axis=1) == truth["layers"]).mean() >= 0.9


@pytest.mark.store(n_images=96, channels=(6, 8, 40))
def test_one_pass_per_layer_gives_the_same_scores_as_one_pass_for_all(store, make_subject):
    subject, _ = make_subject(n_vertices=7, noise=0.5, n_val=16, n_test=16)
    together = score_layers(store, subject, layer_indices=[0, 1, 2], grid=8, device=CPU, alphas=ALPHAS)
    apart = score_layers(store, subject, layer_indices=[0, 1, 2], grid=8, device=CPU, alphas=ALPHAS, budget_bytes=1)
    np.testing.assert_allclose(apart, together, atol=1e-6)


@pytest.mark.store(n_images=1024, channels=(4, 6), chunk_images=64)
def test_host_memory_does_not_grow_with_images_times_vertices(store, make_subject, monkeypatch):
    """With 64-row response blocks and 64-image batches, numpy never holds a fifth of one float64 copy of the
    training responses (960 x 3,000 x 8 bytes = 23 MB): only per-batch and per-feature-set arrays."""
    subject, _ = make_subject(n_vertices=3000, noise=0.5, n_val=32, n_test=32)
    monkeypatch.setattr(layer_statistics, "ROW_BLOCK", 64)
    tracemalloc.start()
    try:
        score_layers(store, subject, layer_indices=[0, 1], grid=8, device=CPU, alphas=ALPHAS, batch_size=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.2 * len(subject.splits["train"]) * subject.n_vertices * 8


def test_response_moments_match_numpy_in_any_row_block(monkeypatch):
    rng = np.random.default_rng(0)
    responses = (rng.standard_normal((50, 4)) * 3 + 100).astype(np.float32)
    rows = np.sort(rng.choice(50, 37, replace=False))
    monkeypatch.setattr(layer_statistics, "ROW_BLOCK", 5)
    moments = ResponseMoments.of(responses, rows)
    picked = responses[rows].astype(np.float64)
    np.testing.assert_allclose(moments.mean, picked.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.sum_squares, ((picked - picked.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-9)
    assert moments.n == 37


def hat_residuals(features: np.ndarray, y: np.ndarray, alphas, *, exact: bool) -> np.ndarray:
    """Per-image held-out residuals at the best alpha from the explicit hat matrix: exact leave-one-out, or GCV's
    ``(y - yhat) / (1 - tr(H) / n)``."""
    x, y = normalised(features), y - y.mean()
    n = len(y)
    best, kept = np.inf, None
    for alpha in alphas:
        hat = np.full((n, n), 1.0 / n) + x @ np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T)
        residual = y - hat @ y
        residual = residual / (1 - np.diag(hat)) if exact else residual / (1 - np.trace(hat) / n)
        if np.mean(residual ** 2) < best - 1e-15:
            best, kept = np.mean(residual ** 2), residual
    return kept


@pytest.mark.store(n_images=96, channels=(6, 40))
@pytest.mark.parametrize("layer, name", [(0, "global"), (1, "local")])
def test_bootstrap_receives_the_per_image_held_out_errors(store, make_subject, layer, name):
    """The bootstrap's plain replicate holds each image's squared GCV residual (feature space, a second pass) or
    exact leave-one-out residual (image kernel, kept from the solve), equal to the explicit hat matrix's."""
    from stages.fit.layer_confidence import LayerBootstrap

    subject, _ = make_subject(n_vertices=4, noise=0.5, n_val=16, n_test=16)
    train = subject.splits["train"]
    bootstrap = LayerBootstrap(len(train), 1, subject.n_vertices, n_resamples=3)
    score_layers(store, subject, layer_indices=[layer], grid=8, device=CPU, alphas=ALPHAS, feature_sets=(name,),
                 batch_size=32, bootstrap=bootstrap)
    features = train_features(store, subject, layer, name)
    for vertex in range(subject.n_vertices):
        expected = hat_residuals(features, subject.responses[train, vertex].astype(np.float64), ALPHAS,
                                 exact=features.shape[1] >= len(train))
        weights = bootstrap.weights.double().numpy()
        np.testing.assert_allclose(bootstrap.sums[:, 0, vertex].double().numpy(), weights @ expected ** 2, rtol=1e-4)


@pytest.mark.store(n_images=96, channels=(6, 40))
@pytest.mark.parametrize("layer", [0, 1])
def test_bootstrap_errors_at_each_vertex_are_its_best_feature_sets(store, make_subject, layer):
    """With both feature sets scored, each vertex's bootstrap errors are those of the set that scores best
    there, whichever form each set takes (layer 0: both in feature space; layer 1: global in feature space,
    local as an image kernel)."""
    from stages.fit.layer_confidence import LayerBootstrap

    subject, _ = make_subject(n_vertices=12, noise=0.5, n_val=16, n_test=16)
    train = subject.splits["train"]
    bootstrap = LayerBootstrap(len(train), 1, subject.n_vertices, n_resamples=3)
    score_layers(store, subject, layer_indices=[layer], grid=8, device=CPU, alphas=ALPHAS, batch_size=32,
                 bootstrap=bootstrap)
    sets = {name: train_features(store, subject, layer, name) for name in ("global", "local")}
    chosen = set()
    for vertex in range(subject.n_vertices):
        y = subject.responses[train, vertex].astype(np.float64)
        scores = {name: best_score(x, y, ALPHAS, exact=x.shape[1] >= len(train)) for name, x in sets.items()}
        name = max(scores, key=scores.get)
        chosen.add(name)
        expected = hat_residuals(sets[name], y, ALPHAS, exact=sets[name].shape[1] >= len(train))
        weights = bootstrap.weights.double().numpy()
        np.testing.assert_allclose(bootstrap.sums[:, 0, vertex].double().numpy(), weights @ expected ** 2, rtol=1e-4)
    assert chosen == {"global", "local"}, f"every vertex chose {chosen}: the test does not mix the sets"
