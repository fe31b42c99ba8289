"""Subject validation at construction, and the seeded splits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cache.errors import InvalidInputError
from pipeline.subjects.splits import make_splits
from stages.subject import Subject


def _subject(**changes: object) -> Subject:
    rng = np.random.default_rng(0)
    fields = dict(
        name="subj01",
        stimulus_ids=np.array([f"nsd-{i:05d}" for i in range(6)]),
        responses=rng.standard_normal((6, 4)).astype(np.float32),
        hemisphere=np.array(["lh", "lh", "rh", "rh"]),
        fsaverage_index=np.array([0, 7, 0, 9]),
        sphere_coords=rng.standard_normal((4, 3)).astype(np.float32),
        rois={"V1": np.array([True, False, True, False])},
        splits={"train": np.array([0, 1, 2]), "val": np.array([3]), "test": np.array([4, 5])},
        split_seed=0,
        noise_ceiling=np.full(4, 0.5, dtype=np.float32),
        mesh="fsaverage5",
    )
    fields.update(changes)
    return Subject(**fields)


def test_a_valid_subject_and_its_derived_fields() -> None:
    subject = _subject()
    assert (subject.n_images, subject.n_vertices) == (6, 4)
    assert subject.concatenated_index.tolist() == [0, 7, 163_842, 163_851]


BAD = {
    "responses 1-D": (dict(responses=np.zeros(4, np.float32)), "responses must be a 2-D array"),
    "responses float64": (dict(responses=np.zeros((6, 4))), "responses must be float32, got float64"),
    "responses NaN": (dict(responses=np.where(np.eye(6, 4) > 0, np.nan, 0).astype(np.float32)),
                      "NaN/Inf in 4 vertex columns"),
    "ids count": (dict(stimulus_ids=np.array(["a", "b"])), "2 stimulus ids for 6 response rows"),
    "ids numeric": (dict(stimulus_ids=np.arange(6)), "stimulus_ids must be a 1-D array of str"),
    "ids repeated": (dict(stimulus_ids=np.array(["a", "a", "b", "c", "d", "e"])), "stimulus ids repeat"),
    "hemisphere value": (dict(hemisphere=np.array(["lh", "left", "rh", "rh"])), "got ['left']"),
    "hemisphere shape": (dict(hemisphere=np.array(["lh", "rh"])), "hemisphere must be an array of shape (4,)"),
    "index dtype": (dict(fsaverage_index=np.array([0.0, 7, 0, 9])), "fsaverage_index must be an integer array"),
    "index range": (dict(fsaverage_index=np.array([0, 7, 0, 163_842]), mesh="fsaverage"), "must lie in 0..163841"),
    "index twice": (dict(fsaverage_index=np.array([7, 7, 0, 9])), "occurs twice"),
    "mesh too small": (dict(fsaverage_index=np.array([0, 7, 0, 20_000])), "mesh fsaverage5 has 10242"),
    "mesh unknown": (dict(mesh="fsaverage8"), "mesh must be one of"),
    "coords dtype": (dict(sphere_coords=np.zeros((4, 3))), "sphere_coords must be float32 of shape (4, 3)"),
    "coords NaN": (dict(sphere_coords=np.full((4, 3), np.nan, np.float32)), "sphere_coords hold NaN/Inf"),
    "roi not bool": (dict(rois={"V1": np.array([1, 0, 1, 0])}), "ROI 'V1' must be a bool array"),
    "roi length": (dict(rois={"V1": np.array([True])}), "ROI 'V1' must be a bool array of shape (4,)"),
    "split name": (dict(splits={"training": np.array([0])}), "unknown split names ['training']"),
    "split range": (dict(splits={"train": np.array([0, 6])}), "outside 0..5"),
    "split negative": (dict(splits={"train": np.array([-1, 2])}), "outside 0..5"),
    "split float": (dict(splits={"train": np.array([0.0, 1.0])}), "must be a 1-D integer array"),
    "split overlap": (dict(splits={"train": np.array([0, 1, 2]), "test": np.array([2, 3])}),
                      "splits 'train' and 'test' share 1 rows"),
    "split repeat": (dict(splits={"train": np.array([0, 0])}), "lists a row twice"),
    "seed": (dict(split_seed="0"), "split_seed must be an int"),
    "nc percent": (dict(noise_ceiling=np.full(4, 40.0, np.float32)), "divide by 100"),
    "nc shape": (dict(noise_ceiling=np.full(3, 0.4, np.float32)), "noise_ceiling must be float32 of shape (4,)"),
    "name": (dict(name=""), "subject name must be a non-empty string"),
    "source": (dict(source={"reader": 1}), "source must be a dict of str -> str"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_fields_are_refused_with_a_clear_message(case: str) -> None:
    changes, fragment = BAD[case]
    with pytest.raises(InvalidInputError) as caught:
        _subject(**changes)
    assert fragment in str(caught.value)


def test_subject_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _subject().name = "other"  # type: ignore[misc]


def test_splits_are_seeded_disjoint_and_complete() -> None:
    first = make_splits(100, seed=1, val_fraction=0.1, test_fraction=0.2)
    assert [first[k].size for k in ("train", "val", "test")] == [72, 8, 20]
    np.testing.assert_array_equal(np.sort(np.concatenate(list(first.values()))), np.arange(100))
    again = make_splits(100, seed=1, val_fraction=0.1, test_fraction=0.2)
    other = make_splits(100, seed=2, val_fraction=0.1, test_fraction=0.2)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["val"], other["val"])
    assert all(np.all(np.diff(rows) > 0) and rows.dtype == np.int64 for rows in first.values())


def test_the_datas_own_test_rows_are_kept() -> None:
    splits = make_splits(10, seed=0, val_fraction=0.25, test_rows=np.array([9, 8]))
    np.testing.assert_array_equal(splits["test"], [8, 9])
    assert splits["val"].size == 2 and splits["train"].size == 6
    assert not set(splits["val"]) & {8, 9}


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(val_fraction=1.0), "val_fraction must lie in [0, 1)"),
    (dict(test_fraction=-0.1), "test_fraction must lie in [0, 1)"),
    (dict(test_rows=np.array([3, 12])), "test rows must lie in 0..9"),
    (dict(test_rows=np.arange(9), val_fraction=0.9), "no training rows left"),
])
def test_bad_split_settings(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        make_splits(10, seed=0, **kwargs)
    assert fragment in str(caught.value)
