"""Warm start of the selectors: per-cell scores find planted cells; the selectors are fitted to targets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cache.errors import ConfigError
from stages.fit import train as train_module
from stages.fit.config import FitConfig
from stages.fit.factortopy import FactorTopy, FactorTopyConfig
from stages.fit.ridge import score_targets
from stages.fit import warmstart
from stages.fit.warmstart import cell_scores, centre_targets, fit_selectors


@pytest.mark.store(n_images=160, channels=(6, 8))
def test_cell_scores_find_the_planted_cells(store, make_subject):
    subject, truth = make_subject(n_vertices=8, noise=0.2, n_val=8, n_test=8)
    scores = cell_scores(store, subject, layer_indices=[0, 1], best_layer=truth["layers"], grid=8, n_components=16)
    assert scores.shape == (8, 64)
    best = scores.argmax(axis=1)
    np.testing.assert_array_equal(best % 8, truth["cells"][:, 0])
    np.testing.assert_array_equal(best // 8, truth["cells"][:, 1])
    centres = centre_targets(scores, 8)
    expected = (2 * truth["cells"] + 1) / 8 - 1
    assert np.abs(centres - expected).max() < 0.25


@pytest.mark.store(n_images=120, channels=(6, 8))
def test_cell_scores_equal_the_explicit_residuals_in_any_vertex_block(store, make_subject, monkeypatch):
    """Scored in blocks of 3 vertices, the scores equal 1 - |y - x w|^2 / |y|^2 computed in full."""
    subject, truth = make_subject(n_vertices=8, noise=0.5, n_val=8, n_test=8)
    whole = cell_scores(store, subject, layer_indices=[0, 1], best_layer=truth["layers"], grid=8, n_components=4)
    monkeypatch.setattr(warmstart, "VERTEX_BLOCK", 3)
    blocked = cell_scores(store, subject, layer_indices=[0, 1], best_layer=truth["layers"], grid=8, n_components=4)
    np.testing.assert_allclose(blocked, whole, atol=1e-6)
    train = subject.splits["train"]
    rng = np.random.default_rng(0)
    projection = rng.standard_normal((6, 4)).astype(np.float32)        # layer 0 is drawn first (sorted slots)
    local = np.zeros((len(train), 6, 8, 8), np.float32)
    for batch in store.iter_batches(subject.stimulus_ids[train], batch_size=256, grid=8):
        local[batch.positions] = batch.local[0]
    vertex = int(np.flatnonzero(truth["layers"] == 0)[0])
    y = subject.responses[train][:, vertex].astype(np.float64)
    y = y - y.mean()
    for cell in (0, 27):
        x = (local.reshape(len(local), 6, 64)[:, :, cell] @ projection).astype(np.float64)
        x = (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)
        w = np.linalg.solve(x.T @ x + len(y) * np.eye(4), x.T @ y)
        np.testing.assert_allclose(blocked[vertex, cell], 1 - ((y - x @ w) ** 2).sum() / (y ** 2).sum(), atol=1e-5)


def test_centre_targets_is_a_weighted_centroid():
    scores = np.zeros((2, 16))
    scores[0, 5] = 1.0                      # cell (x=1, y=1) of a 4x4 grid
    scores[1, [0, 3]] = 1.0                 # cells (0, 0) and (3, 0): centroid x = 0, y = top row
    centres = centre_targets(scores, 4)
    np.testing.assert_allclose(centres[0], [-0.25, -0.25], atol=1e-6)
    np.testing.assert_allclose(centres[1], [0.0, -0.75], atol=1e-6)


def test_score_targets_softmax():
    scores = np.array([[0.1, 0.3, 0.2]])
    targets = score_targets(scores, temperature=0.1)
    expected = np.exp([1.0, 3.0, 2.0]) / np.exp([1.0, 3.0, 2.0]).sum()
    np.testing.assert_allclose(targets[0], expected, rtol=1e-5)


def test_fit_selectors_reaches_targets():
    torch.manual_seed(0)
    coords = torch.randn(30, 3) * 50
    model = FactorTopy(n_channels=(4, 4, 4), grid=8, coords=coords, cfg=FactorTopyConfig())
    layer = np.eye(3, dtype=np.float32)[np.arange(30) % 3] * 0.9 + 0.1 / 3
    space = np.stack([np.linspace(-0.6, 0.6, 30), np.full(30, 0.3)], axis=1).astype(np.float32)
    scale_before = model.selections().scale.detach().clone()
    fit_selectors(model, layer_targets=[layer], space_targets=[space], steps=300, lr=1e-2)
    chosen = model.selections()
    assert (chosen.layer_weights.argmax(dim=1).numpy() == np.arange(30) % 3).mean() > 0.9
    assert np.abs(chosen.space.detach().numpy() - space).mean() < 0.1
    torch.testing.assert_close(chosen.scale.detach(), scale_before)


@pytest.mark.store(channels=(6, 8))
@pytest.mark.store(n_images=64, channels=(6, 8))
def test_warm_start_runs_its_ridge_on_the_fit_device(store, make_subject, monkeypatch):
    """``--device cpu`` on a CUDA machine: the warm start's ridge gets the fit's device, not its own "auto".

    While the ridge runs, CUDA claims to be available, so a ridge that resolved "auto" itself would pick it.
    """
    subject, _ = make_subject(n_vertices=5)
    seen = []
    original = warmstart.score_layers

    def spy(*args, **kwargs):
        seen.append(kwargs["device"])
        with monkeypatch.context() as patch:
            patch.setattr(torch.cuda, "is_available", lambda: True)
            return original(*args, **kwargs)

    monkeypatch.setattr(warmstart, "score_layers", spy)
    cfg = FitConfig(epochs=1, batch_size=16, warm_start="layer+space", device="cpu")
    result = train_module.fit_factortopy(store, subject, cfg, checkpoint_dir=None, progress=False)
    assert seen == [torch.device("cpu")]
    assert result.metrics["device"] == "cpu" and result.config["device"] == "cpu"


@pytest.mark.store(n_images=96, channels=(6, 8, 12))
def test_fit_reports_the_warm_start_layer_sets_and_keeps_them_across_a_resume(store, make_subject, tmp_path):
    subject, _ = make_subject(n_vertices=6)
    cfg = FitConfig(epochs=1, batch_size=16, warm_start="layer", device="cpu", layer_resamples=40)
    first = train_module.fit_factortopy(store, subject, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False)
    v = first.vertices
    assert ((v["layer_set_size"] >= 1) & (v["layer_set_size"] <= 3)).all()
    assert ((v["layer_confidence"] >= 0) & (v["layer_confidence"] <= 1)).all()
    assert {"p_value", "q_value"} <= set(v) and first.replicates["r2_test"].shape[1] == 6
    resumed = train_module.fit_factortopy(store, subject, dataclasses.replace(cfg, epochs=2),
                                          checkpoint_dir=tmp_path / "ckpt", progress=False)
    for layer in range(3):
        np.testing.assert_array_equal(resumed.vertices[f"layer_in_set_{layer:02d}"], v[f"layer_in_set_{layer:02d}"])
    none = train_module.fit_factortopy(store, subject, dataclasses.replace(cfg, layer_resamples=0),
                                       checkpoint_dir=None, progress=False)
    assert "layer_set_size" not in none.vertices
    with pytest.raises(ConfigError, match="layer_resamples"):
        FitConfig(layer_resamples=-1)


@pytest.mark.store(n_images=64, channels=(6, 8, 12), chunk_images=16)
def test_a_resident_fit_warm_starts_from_its_held_features_with_the_streamed_layer_sets(store, make_subject):
    """Held features: the warm start reads nothing from the store and finds the streamed fit's layer sets."""
    subject, _ = make_subject(n_vertices=4)
    cfg = FitConfig(epochs=1, batch_size=16, warm_start="layer+space", device="cpu", layer_resamples=20)
    fits = {mode: train_module.fit_factortopy(store, subject, dataclasses.replace(cfg, resident=mode),
                                              checkpoint_dir=None, progress=False) for mode in ("on", "off")}
    read = {mode: fit.metrics["phases"]["warm_start"]["store_gb_read"] for mode, fit in fits.items()}
    assert read["on"] == 0 and read["off"] > 0
    for layer in range(3):
        column = f"layer_in_set_{layer:02d}"
        np.testing.assert_array_equal(fits["on"].vertices[column], fits["off"].vertices[column])


@pytest.mark.store(n_images=64, channels=(6, 8, 12), chunk_images=16)
def test_a_streamed_warm_start_takes_its_cells_from_the_layer_scores_store_pass(store, make_subject):
    """The per-cell scores add no store read: a "layer+space" warm start decodes what a "layer" one does."""
    subject, _ = make_subject(n_vertices=4)
    cfg = FitConfig(epochs=1, batch_size=16, device="cpu", resident="off", layer_resamples=0)
    read = {mode: train_module.fit_factortopy(store, subject, dataclasses.replace(cfg, warm_start=mode),
                                              checkpoint_dir=None, progress=False).metrics["phases"]["warm_start"]
            ["store_gb_read"] for mode in ("layer", "layer+space")}
    assert read["layer"] > 0
    assert read["layer+space"] == read["layer"]
