"""The training loop: bad input caught before training, z-scoring, determinism, outputs against oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score as sklearn_r2

from cache.errors import IncompleteStoreError, InvalidInputError, StoreMismatchError
from stages.fit import train as train_module
from stages.device import resolve_precision
from stages.fit.config import CPU_PRECISIONS, FitConfig
from stages.fit.outputs import METRICS_FILE
from stages.fit.result import FitResult, REQUIRED_COLUMNS
from stages.fit.weights_file import WEIGHTS_FILE
from stages.fit.targets import standardise
from stages.fit.train import fit_factortopy
from train_stubs import forbid_training

FAST = dict(epochs=2, batch_size=16, warm_start="none", eval_batch_size=32)


def _replace(subject, **changes):
    from dataclasses import replace
    return replace(subject, **changes)


def test_store_lacking_images_names_them(store, subject, monkeypatch):
    forbid_training(monkeypatch)
    ids = subject.stimulus_ids.copy()
    ids[3] = "nsd-99999"
    with pytest.raises(IncompleteStoreError, match="nsd-99999"):
        fit_factortopy(store, _replace(subject, stimulus_ids=ids), FitConfig(**FAST), checkpoint_dir=None,
                       progress=False)


def test_layers_absent_from_store(store, subject, monkeypatch):
    forbid_training(monkeypatch)
    with pytest.raises(StoreMismatchError, match="block9"):
        fit_factortopy(store, subject, FitConfig(**FAST, layers=("block0", "block9")), checkpoint_dir=None,
                       progress=False)


def test_nan_responses(store, subject, monkeypatch):
    forbid_training(monkeypatch)
    responses = subject.responses.copy()
    responses[5, 2] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        fit_factortopy(store, _replace(subject, responses=responses), FitConfig(**FAST), checkpoint_dir=None,
                       progress=False)


def test_too_few_images_for_the_split(store, subject, monkeypatch):
    forbid_training(monkeypatch)
    splits = dict(subject.splits, train=subject.splits["train"][:4])
    with pytest.raises(InvalidInputError, match="train split has 4 images"):
        fit_factortopy(store, _replace(subject, splits=splits), FitConfig(**FAST), checkpoint_dir=None,
                       progress=False)
    splits = dict(subject.splits, val=subject.splits["val"][:1])
    with pytest.raises(InvalidInputError, match="val split"):
        fit_factortopy(store, _replace(subject, splits=splits), FitConfig(**FAST), checkpoint_dir=None,
                       progress=False)


def test_missing_grid(store, subject):
    with pytest.raises(InvalidInputError, match="grid 16"):
        fit_factortopy(store, subject, FitConfig(**FAST, grid=16), checkpoint_dir=None, progress=False)


def test_standardise_uses_training_rows_only():
    rng = np.random.default_rng(0)
    responses = rng.normal(3.0, 2.0, (20, 4)).astype(np.float32)
    responses[:, 3] = 1.0
    train_rows = np.arange(0, 20, 2)
    stats = standardise(responses, train_rows)
    np.testing.assert_allclose(stats.mean, responses[train_rows].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats.std[:3], responses[train_rows].std(axis=0)[:3], rtol=1e-5)
    assert stats.std[3] == 1.0
    z = stats.apply(responses)[train_rows]
    np.testing.assert_allclose(z[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :3].std(axis=0), 1, atol=1e-5)


@pytest.fixture()
def fitted(store, subject, tmp_path):
    result = fit_factortopy(store, subject, FitConfig(**FAST), checkpoint_dir=tmp_path / "ck", progress=False)
    return result, tmp_path


def test_same_seed_same_weights(store, subject, fitted):
    again = fit_factortopy(store, subject, FitConfig(**FAST), checkpoint_dir=None, progress=False)
    first = fitted[0]
    assert first.weights.keys() == again.weights.keys()
    for key in first.weights:
        torch.testing.assert_close(first.weights[key], again.weights[key], rtol=0, atol=0)


def test_result_columns_and_scores_match_oracles(store, subject, fitted):
    result, _ = fitted
    for column in REQUIRED_COLUMNS + ("layer_weight_00", "layer_weight_02", "r2_val", "r_val", "r2_test", "r_test",
                                      "r2_test_nc", "noise_ceiling", "train_mean", "train_std"):
        assert column in result.vertices, column
    np.testing.assert_allclose(result.layer_weights.sum(axis=1), 1.0, atol=1e-5)
    assert list(result.vertices["roi"][:3]) == ["V1", "V1", "V1"] and result.vertices["roi"][-1] == "all"
    # the recorded per-vertex statistics reproduce the z-scoring; the scores match sklearn on predictions
    stats = standardise(subject.responses, subject.splits["train"])
    np.testing.assert_allclose(result.vertices["train_mean"], stats.mean)
    test_targets = stats.apply(subject.responses[subject.splits["test"]])
    model = train_module.FactorTopy(n_channels=store.n_channels, grid=8,
                                    coords=torch.from_numpy(subject.sphere_coords), cfg=FitConfig().model)
    model.load_state_dict(result.weights)
    features = store.read(subject.stimulus_ids[subject.splits["test"]])
    scales = result.metrics["feature_scales"]  # per layer 1 / RMS over training images (normalise_layers)
    train_features = store.read(subject.stimulus_ids[subject.splits["train"]])
    np.testing.assert_allclose(scales[1][0], 1 / np.sqrt(np.mean(train_features.local[1].astype(np.float64) ** 2)),
                               rtol=1e-5)
    with torch.no_grad():
        prediction = model([torch.from_numpy(a * s) for a, (s, _) in zip(features.local, scales)],
                           [torch.from_numpy(a * s) for a, (_, s) in zip(features.global_, scales)]).numpy()
    oracle = sklearn_r2(test_targets, prediction, multioutput="raw_values")
    np.testing.assert_allclose(result.vertices["r2_test"], oracle, atol=1e-4)
    np.testing.assert_allclose(result.vertices["r2_test_nc"], oracle / 0.8, atol=1e-4)
    assert result.metrics["mean_r2_test"] == pytest.approx(float(oracle.mean()), abs=1e-4)
    assert result.metrics["split_sizes"] == {"test": 16, "val": 16, "train": 32}
    assert result.config["batch_size"] == 16 and result.provenance["seed"] == 0


def test_saved_fit_is_complete(fitted):
    result, tmp_path = fitted
    folder = result.save(tmp_path / "fit")
    loaded = FitResult.load(folder)
    np.testing.assert_array_equal(loaded.vertices["layer_argmax"], result.vertices["layer_argmax"])
    lines = [json.loads(line) for line in (folder / METRICS_FILE).read_text().splitlines()]
    assert [row["epoch"] for row in lines] == [1, 2]
    assert {"train_loss", "val_r2", "images_per_s"} <= set(lines[0])
    assert (folder / WEIGHTS_FILE).is_file()
    phases = loaded.metrics["phases"]            # each phase's cost, as fit.json records it
    assert {"prepare", "warm_start", "train", "validate", "predict"} <= set(phases)
    assert all(entry["seconds"] >= 0 and entry["peak_rss_gb"] > 0 for entry in phases.values())
    assert loaded.metrics["feature_source"][0].startswith(("resident", "streamed"))
    assert loaded.metrics["held_out_source"][0]["val"].startswith(("resident", "streamed"))
    assert phases["prepare"]["store_gb_read"] > 0          # what each phase decoded from the store


@pytest.mark.slow
@pytest.mark.store(n_images=160, channels=(6, 6))
def test_learns_the_planted_signal(store, make_subject):
    subject, _ = make_subject(n_vertices=4, noise=0.1, n_val=24, n_test=24, token="global")
    cfg = FitConfig(epochs=12, batch_size=8, warm_start="none", lr=1e-2, selector_lr=1e-7, patience=12)
    result = fit_factortopy(store, subject, cfg, checkpoint_dir=None, progress=False)
    assert result.metrics["mean_r2_test"] > 0.05
    history = [row["val_r2"] for row in result.history]
    assert max(history) > history[0]


@pytest.mark.store(n_images=160, channels=(6, 6))
def test_bf16_applies_on_the_cpu_and_learns_like_fp32(store, make_subject):
    """An explicit bf16 trains and predicts under CPU autocast (recorded as such) and learns about as well as
    fp32; fp16, which needs a CUDA gradient scaler, and auto stay fp32 on the CPU."""
    subject, _ = make_subject(n_vertices=4, noise=0.1, n_val=24, n_test=24, token="global")
    cfg = dict(epochs=6, batch_size=8, warm_start="none", lr=1e-2, selector_lr=1e-7, patience=6, device="cpu")
    results = {precision: fit_factortopy(store, subject, FitConfig(**cfg, precision=precision), checkpoint_dir=None,
                                         progress=False).metrics for precision in ("fp32", "bf16")}
    assert results["bf16"]["precision"] == "bfloat16" and results["fp32"]["precision"] == "float32"
    assert results["fp32"]["mean_r2_test"] > 0.05
    assert results["bf16"]["mean_r2_test"] != results["fp32"]["mean_r2_test"]
    assert abs(results["bf16"]["mean_r2_test"] - results["fp32"]["mean_r2_test"]) < 0.05
    cpu = torch.device("cpu")
    assert [resolve_precision(word, cpu, cpu_autocast=CPU_PRECISIONS) for word in ("auto", "fp16", "bf16")] == [
        "fp32", "fp32", "bf16"]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_gpu(store, subject, precision):
    cfg = FitConfig(**FAST, device="cuda", precision=precision)
    result = fit_factortopy(store, subject, cfg, checkpoint_dir=None, progress=False)
    assert result.metrics["precision"] == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert np.isfinite(result.vertices["r2_test"]).all()
