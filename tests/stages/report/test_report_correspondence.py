"""A subject planted from one network and fitted with another, at test size: counterparts by CKA, the scores
against hand-made cases, and the model-error allowance widening the sets towards the counterpart."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cache.errors import InvalidInputError
from stages.features.similarity import cka_matrix, layer_kernels
from stages.fit.ridge import RidgeConfig, fit_ridge
from stages.report.correspondence import correspondence_scores, counterpart_layers, coverage_by_accuracy
from tests.builders import DERIVED_SOURCES, SYNTHETIC_FEATURES, derived_store, planted_subject, random_store


def hand_columns() -> dict[str, np.ndarray]:
    """Four vertices of a 3-layer fit: sets {0}, {0,1}, {2}, {1,2}; shown layers 0, 1, 2, 2."""
    in_set = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=bool)
    columns = {f"layer_in_set_{layer:02d}": in_set[:, layer] for layer in range(3)}
    columns.update(layer_argmax=np.array([0, 1, 2, 2]), r2_test=np.array([0.1, 0.2, 0.3, 0.4]),
                   layer_set_size=in_set.sum(axis=1), layer_set_size_sampling=np.array([1, 1, 1, 1]))
    return columns


def test_scores_of_a_hand_made_fit():
    cka = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.4], [0.1, 0.5, 0.7], [0.2, 0.6, 0.5]])   # 4 planted layers
    planted = np.array([0, 1, 2, 3])                                                      # counterparts 0 1 2 1
    np.testing.assert_array_equal(counterpart_layers(planted, cka), [0, 1, 2, 1])
    scores = correspondence_scores(planted, 4, hand_columns(), cka, np.full(4, 0.5))
    assert scores["set_coverage"] == 1.0 and scores["counterpart_exact"] == 0.75
    assert scores["mean_set_size"] == 1.5 and scores["relative_set_size"] == 0.5
    assert scores["mean_sampling_set_size"] == 1.0
    assert scores["r2_over_nc"] == pytest.approx(0.5)
    assert scores["counterpart_cka"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6) / 4)
    table = coverage_by_accuracy(planted, hand_columns(), cka, np.full(4, 0.5))
    assert table["r2_over_nc"].tolist() == ["< 0.25", "0.25-0.5", "0.5-0.75", ">= 0.75"]
    assert table["vertices"].tolist() == [1, 1, 1, 1]
    with pytest.raises(InvalidInputError, match="4 planted layers"):
        counterpart_layers(np.array([4]), cka)
    without = {k: v for k, v in hand_columns().items() if k != "layer_in_set_02"}
    with pytest.raises(InvalidInputError, match="no layer sets"):
        coverage_by_accuracy(planted, without, cka, np.full(4, 0.5))
    no_sets = {k: v for k, v in hand_columns().items() if not k.startswith("layer_in_set")}
    map_only = correspondence_scores(planted, 4, no_sets, cka, np.full(4, 0.5))
    assert map_only["counterpart_exact"] == 0.75 and np.isnan(map_only["set_coverage"])


def test_a_subject_planted_from_one_network_and_fitted_with_another(tmp_path: Path):
    """Plant from a 4-layer store, fit a 6-layer store derived from it with ridge: the counterparts are the layers
    each derived layer was made from, the map keeps the planted order, and the model-error allowance (a ceiling of 1:
    all the best layer's error is model error) only adds layers to the resampling sets."""
    source = random_store(tmp_path / "a.zarr", n_images=96, seed=3, **SYNTHETIC_FEATURES)
    derived = derived_store(tmp_path / "b.zarr", source)
    subject, truth = planted_subject(source, n_vertices=24, noise=1.0, token="global", n_val=8, n_test=16)
    subject = replace(subject, noise_ceiling=np.ones(subject.n_vertices, dtype=np.float32))
    train_ids = list(subject.stimulus_ids[subject.splits["train"]])
    cka = cka_matrix(layer_kernels(source, train_ids), layer_kernels(derived, train_ids))
    counterpart = counterpart_layers(truth["layers"], cka)
    assert all(truth["layers"][v] == DERIVED_SOURCES[counterpart[v]] for v in range(24))
    fit = fit_ridge(derived, subject, RidgeConfig(layer_model_error=0.5, layer_resamples=20))
    scores = correspondence_scores(truth["layers"], 4, fit.vertices, cka, subject.noise_ceiling)
    assert scores["relative_depth_spearman"] > 0.5 and scores["set_coverage"] >= 0.5
    assert scores["mean_set_size"] > scores["mean_sampling_set_size"] >= 1
    assert (fit.vertices["layer_set_size"] >= fit.vertices["layer_set_size_sampling"]).all()
    assert fit.config["layer_model_error"] == 0.5
