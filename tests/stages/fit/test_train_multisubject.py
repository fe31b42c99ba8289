"""Joint fits of several subjects: shared selectors, own read-outs, one result each, bad input caught early."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cache.errors import IncompleteStoreError, InvalidInputError, StoreMismatchError
from stages.fit.checkpoint import CHECKPOINT_JSON
from stages.fit.config import FitConfig
from stages.fit.factortopy import FactorTopy, FactorTopyConfig
from stages.fit.multisubject import JOINT_METHOD, check_shared_positions, fit_factortopy_multi
from stages.fit.train import build_optimiser, fit_factortopy, interleaved_batches
from stages.fit.warmstart import fit_selectors
from train_stubs import Killed, forbid_training, interrupt_after_first_checkpoint

FAST = dict(epochs=2, batch_size=16, eval_batch_size=32)


@pytest.fixture()
def subjects(subject, make_subject):
    second, _ = make_subject(seed=2)
    # the same vertices (coordinates) as the first subject, other responses and another split
    return subject, replace(second, name="subj02", sphere_coords=subject.sphere_coords)


@pytest.fixture()
def joint(store, subjects):
    return fit_factortopy_multi(store, subjects, FitConfig(**FAST), checkpoint_dir=None, progress=False)


def test_one_result_per_subject_with_shared_selectors(joint, subjects):
    first, second = joint
    assert [fit.subject for fit in joint] == ["subj01", "subj02"]
    assert [fit.n_vertices for fit in joint] == [s.n_vertices for s in subjects]
    assert {fit.method for fit in joint} == {JOINT_METHOD}
    assert first.provenance["joint"]["subjects"] == ["subj01", "subj02"]
    assert [fit.provenance["joint"]["subject_index"] for fit in joint] == [0, 1]
    # identical coordinates -> identical selections: the selectors are shared
    for column in ("layer_weight_00", "layer_weight_02", "space_x", "space_y", "scale"):
        np.testing.assert_array_equal(first.vertices[column], second.vertices[column])
    # each subject keeps its own read-out, saved under the single-subject name
    assert not torch.equal(first.weights["readouts.0.weight"], second.weights["readouts.0.weight"])
    assert not any(key.startswith("readouts.1.") for key in first.weights)
    for key in first.weights:
        if not key.startswith("readouts."):
            torch.testing.assert_close(first.weights[key], second.weights[key], rtol=0, atol=0)
    for fit, subject in zip(joint, subjects):
        assert fit.metrics["split_sizes"]["test"] == len(subject.splits["test"])
        assert np.isfinite(fit.vertices["r2_test"]).all()
    rows = first.history
    assert {"val_r2", "val_r2_subj01", "val_r2_subj02"} <= set(rows[0])
    assert rows[0]["val_r2"] == pytest.approx((rows[0]["val_r2_subj01"] + rows[0]["val_r2_subj02"]) / 2)
    assert first.metrics["steps"] == 2 * (2 + 2)  # 2 epochs x (2 batches of 32 training images per subject)


def test_saved_weights_load_into_a_single_subject_model(joint, subjects, tmp_path):
    fit = joint[1]
    folder = fit.save(tmp_path / "fit")
    assert (folder / "fit.json").is_file()
    model = FactorTopy(n_channels=(4, 6, 8), grid=8, coords=torch.from_numpy(subjects[1].sphere_coords),
                       cfg=FactorTopyConfig())
    model.load_state_dict(fit.weights)
    np.testing.assert_allclose(model.selections().space[:, 0].detach().numpy(), fit.vertices["space_x"], atol=1e-6)


def test_same_seed_same_fit(store, subjects):
    cfg = FitConfig(**FAST, warm_start="none")
    first = fit_factortopy_multi(store, subjects, cfg, checkpoint_dir=None, progress=False)
    again = fit_factortopy_multi([store, store], subjects, cfg, checkpoint_dir=None, progress=False)
    for a, b in zip(first, again):
        for key in a.weights:
            torch.testing.assert_close(a.weights[key], b.weights[key], rtol=0, atol=0)


def test_single_or_repeated_subjects_are_refused(store, subjects, monkeypatch):
    forbid_training(monkeypatch)
    with pytest.raises(InvalidInputError, match="at least two subjects"):
        fit_factortopy_multi(store, subjects[:1], FitConfig(**FAST), checkpoint_dir=None, progress=False)
    with pytest.raises(InvalidInputError, match="more than once"):
        fit_factortopy_multi(store, [subjects[0], subjects[0]], FitConfig(**FAST), checkpoint_dir=None,
                             progress=False)
    with pytest.raises(InvalidInputError, match="3 feature stores for 2 subjects"):
        fit_factortopy_multi([store] * 3, subjects, FitConfig(**FAST), checkpoint_dir=None, progress=False)


def test_stores_of_other_layers_are_refused(store, subjects, make_store, monkeypatch):
    forbid_training(monkeypatch)
    other = make_store(channels=(4, 6))
    with pytest.raises(StoreMismatchError, match="differ in layers"):
        fit_factortopy_multi([store, other], subjects, FitConfig(**FAST), checkpoint_dir=None, progress=False)
    wider = make_store(channels=(4, 6, 16))
    with pytest.raises(StoreMismatchError, match="channel widths"):
        fit_factortopy_multi([store, wider], subjects, FitConfig(**FAST), checkpoint_dir=None, progress=False)


def test_subject_with_images_missing_from_the_store(store, subjects, monkeypatch):
    forbid_training(monkeypatch)
    ids = subjects[1].stimulus_ids.copy()
    ids[3] = "nsd-99999"
    with pytest.raises(IncompleteStoreError, match="subject subj02: .*nsd-99999"):
        fit_factortopy_multi(store, [subjects[0], replace(subjects[1], stimulus_ids=ids)], FitConfig(**FAST),
                             checkpoint_dir=None, progress=False)


def test_joint_fit_resumes_and_refuses_other_subjects(store, subjects, tmp_path, monkeypatch):
    cfg = FitConfig(**FAST, warm_start="none", resident="off", shuffle_buffer=24)
    straight = fit_factortopy_multi(store, subjects, cfg, checkpoint_dir=None, progress=False)
    with monkeypatch.context() as patch:
        interrupt_after_first_checkpoint(patch)
        with pytest.raises(Killed):
            fit_factortopy_multi(store, subjects, cfg, checkpoint_dir=tmp_path / "ck", progress=False)
    assert (tmp_path / "ck" / CHECKPOINT_JSON).is_file()
    with pytest.raises(StoreMismatchError, match="belongs to another fit"):
        fit_factortopy(store, subjects[0], cfg, checkpoint_dir=tmp_path / "ck", progress=False)
    resumed = fit_factortopy_multi(store, subjects, cfg, checkpoint_dir=tmp_path / "ck", progress=False)
    for a, b in zip(straight, resumed):
        for key in a.weights:
            torch.testing.assert_close(a.weights[key], b.weights[key], rtol=0, atol=0)
        np.testing.assert_array_equal(a.vertices["r2_test"], b.vertices["r2_test"])


class _Source:
    """A feature source stand-in: ``n_images`` images served as batches of positions."""

    def __init__(self, n_images):
        self.n_images = n_images

    def batches(self, *, batch_size, shuffle, seed, epoch):
        order = np.random.default_rng([seed, epoch]).permutation(self.n_images)
        for start in range(0, self.n_images, batch_size):
            yield order[start:start + batch_size]


def test_interleaving_serves_every_image_once_in_proportion():
    sources = [_Source(40), _Source(10)]
    served = list(interleaved_batches(sources, batch_size=4, seed=0, epoch=1))
    for index, source in enumerate(sources):
        positions = np.concatenate([batch for owner, batch in served if owner == index])
        assert sorted(positions.tolist()) == list(range(source.n_images))
    owners = [owner for owner, _ in served]
    assert owners.count(0) == 10 and owners.count(1) == 3
    assert owners != sorted(owners)  # interleaved, not one subject after the other
    assert served[0][0] == list(interleaved_batches(sources, batch_size=4, seed=0, epoch=1))[0][0]


def test_warm_start_fits_shared_selectors_to_the_mean_target():
    torch.manual_seed(0)
    coords = torch.randn(30, 3) * 50
    model = FactorTopy(n_channels=(4, 4, 4), grid=8, coords=[coords, coords], cfg=FactorTopyConfig())
    first = np.stack([np.full(30, 0.4), np.full(30, 0.2)], axis=1).astype(np.float32)
    second = np.stack([np.full(30, -0.2), np.full(30, 0.4)], axis=1).astype(np.float32)
    fit_selectors(model, space_targets=[first, second], steps=300, lr=1e-2)
    np.testing.assert_allclose(model.selections(subject=1).space.detach().numpy(), (first + second) / 2, atol=0.05)
    with pytest.raises(InvalidInputError, match="one per subject"):
        fit_selectors(model, space_targets=[first])
    with pytest.raises(InvalidInputError, match="one per subject"):
        fit_selectors(model, space_targets=first)


def test_subjects_placing_a_vertex_apart_are_refused_until_given_one_offset(store, subjects, monkeypatch):
    """Each subject's own right-hemisphere shift depends on its vertex set; a joint fit needs one shift."""
    from pipeline.surfaces import shared_sphere_coordinates, sphere_coordinates

    hemisphere = np.array(["lh", "lh", "lh", "rh", "rh", "rh"])
    vertex_sets = (np.array([0, 1, 2, 0, 1, 2]), np.array([1, 2, 3, 1, 2, 5000]))
    own = [replace(subject, hemisphere=hemisphere, fsaverage_index=index,
                   sphere_coords=sphere_coordinates(hemisphere, index))
           for subject, index in zip(subjects, vertex_sets)]
    forbid_training(monkeypatch)
    with pytest.raises(InvalidInputError, match=r"subj02: fsaverage vertex \d+ \(rh\) sits .*shared_sphere_coordinates"):
        fit_factortopy_multi(store, own, FitConfig(**FAST), checkpoint_dir=None, progress=False)
    shared = shared_sphere_coordinates(own)
    np.testing.assert_array_equal(shared[0].sphere_coords[[1, 2, 4, 5]], shared[1].sphere_coords[[0, 1, 3, 4]])
    np.testing.assert_array_equal(shared[0].sphere_coords[:3], own[0].sphere_coords[:3])  # left hemisphere unshifted
    check_shared_positions(shared)


@pytest.mark.parametrize("n_subjects", [1, 3])
def test_shared_selectors_learn_at_the_rate_of_one_read_out(n_subjects):
    """A joint step trains one subject's read-out but every shared selector: their rates are divided by the
    number of subjects, so per epoch they move as in a separate fit (at the full rate the scale selector
    saturated at 'global' before the read-outs learned the local path). Read-outs keep the full rate."""
    coords = [torch.randn(5, 3, generator=torch.Generator().manual_seed(k)) for k in range(n_subjects)]
    model = FactorTopy(n_channels=[4, 6], grid=8, coords=coords, cfg=FactorTopyConfig())
    cfg = FitConfig(lr=1e-2, selector_lr=1e-3, layer_lr=3e-3)
    groups = build_optimiser(model, cfg).param_groups
    assert [group["lr"] for group in groups] == pytest.approx([1e-2, 3e-3 / n_subjects, 1e-3 / n_subjects])
