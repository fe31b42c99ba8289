"""Every registered subject reader keeps the one ``Subject`` contract, on a small folder of its own kind.

Parametrised over ``pipeline.subjects.list_subject_readers()``: a reader registered without
a writer in ``subject_folders.SUBJECT_FOLDERS`` fails here. The oracles are the contract of
``stages.subject.Subject`` written out plainly and the fsaverage sphere read from disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cache.errors import InvalidInputError
from pipeline.subjects import list_subject_readers, load_subject
from pipeline.subjects.assemble import finite_vertices
from pipeline.surfaces import load_mesh
from stages.subject import MESH_VERTICES, SPLIT_NAMES, Subject
from subject_folders import SUBJECT_FOLDERS, SubjectFolder

KINDS = [reader.name for reader in list_subject_readers()]
SEED = 7


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Every registered subject data kind."""
    return request.param


@pytest.fixture
def folder(kind: str, tmp_path: Path) -> SubjectFolder:
    """A small subject of ``kind`` written under tmp_path."""
    if kind not in SUBJECT_FOLDERS:
        pytest.fail(f"subject reader {kind!r} has no small folder to check its contract on; "
                    "add a writer for it to SUBJECT_FOLDERS in tests/subject_folders.py")
    return SUBJECT_FOLDERS[kind](tmp_path)


@pytest.fixture
def loaded(kind: str, folder: SubjectFolder) -> Subject:
    """That subject, read through ``load_subject``."""
    return _load(kind, folder)


def _load(kind: str, folder: SubjectFolder, **kwargs) -> Subject:
    return load_subject(kind, folder.subject, root=folder.root, options=folder.options, split_seed=SEED, **kwargs)


def check_vertices(subject: Subject) -> None:
    """Vertex fields: shapes, hemispheres, indices unique and inside the named (smallest) mesh, sphere coordinates."""
    n = subject.n_vertices
    assert n >= 1
    assert subject.hemisphere.shape == (n,) and set(subject.hemisphere.tolist()) <= {"lh", "rh"}
    index = subject.fsaverage_index
    assert index.shape == (n,) and index.dtype.kind in "iu"
    assert len(set(zip(subject.hemisphere.tolist(), index.tolist()))) == n
    smallest = min((size, mesh) for mesh, size in MESH_VERTICES.items() if index.max() < size)[1]
    assert subject.mesh == smallest and index.min() >= 0
    # registration sphere; the right hemisphere moved along x so that its min x = lh min + 1.5 * lh x range
    assert subject.sphere_coords.dtype == np.float32 and subject.sphere_coords.shape == (n, 3)
    sphere = load_mesh(subject.mesh, "sphere")
    lh, rh = subject.hemisphere == "lh", subject.hemisphere == "rh"
    expected = np.empty((n, 3))
    expected[lh] = sphere.lh.coords[index[lh]]
    expected[rh] = sphere.rh.coords[index[rh]]
    if lh.any() and rh.any():
        x = expected[lh, 0]
        expected[rh, 0] += x.min() + 1.5 * (x.max() - x.min()) - expected[rh, 0].min()
    np.testing.assert_allclose(subject.sphere_coords, expected, atol=1e-3)


def check_subject_contract(subject: Subject, *, kind: str) -> None:
    """Every field of the ``Subject`` contract, checked the same way for every reader."""
    assert isinstance(subject, Subject) and isinstance(subject.name, str) and subject.name
    ids = subject.stimulus_ids
    assert ids.ndim == 1 and all(isinstance(i, str) and i for i in ids.tolist())
    assert len(set(ids.tolist())) == ids.size >= 1
    responses = subject.responses
    assert responses.dtype == np.float32 and responses.shape == (ids.size, subject.n_vertices)
    assert np.isfinite(responses).all()
    check_vertices(subject)
    assert subject.rois, "the folder should have ROIs, so that masking is checked"
    for name, mask in subject.rois.items():
        assert isinstance(name, str) and name and mask.dtype == bool and mask.shape == (subject.n_vertices,)
    # splits: known names, sorted unique rows, disjoint, covering every row; the seed recorded
    assert set(subject.splits) == set(SPLIT_NAMES)
    for rows in subject.splits.values():
        assert rows.ndim == 1 and rows.dtype.kind in "iu" and np.all(np.diff(rows) > 0)
    rows = np.concatenate(list(subject.splits.values()))
    np.testing.assert_array_equal(np.sort(rows), np.arange(subject.n_images))
    assert subject.splits["train"].size and subject.splits["test"].size
    assert subject.split_seed == SEED
    ceiling = subject.noise_ceiling
    assert ceiling is not None, "the folder should have a noise ceiling, so that it is checked"
    assert ceiling.dtype == np.float32 and ceiling.shape == (subject.n_vertices,)
    assert np.isfinite(ceiling).all() and ceiling.min() >= 0 and ceiling.max() <= 1
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in subject.source.items())
    assert subject.source["reader"] == kind


def test_reader_keeps_the_subject_contract(kind: str, folder: SubjectFolder, loaded: Subject) -> None:
    check_subject_contract(loaded, kind=kind)
    assert loaded.name == f"subj{folder.subject:02d}"
    again = _load(kind, folder)
    for split, rows in loaded.splits.items():
        np.testing.assert_array_equal(again.splits[split], rows)  # the splits are seeded
    np.testing.assert_array_equal(again.responses, loaded.responses)


def test_mask_keeps_exactly_the_vertices_of_an_roi(kind: str, folder: SubjectFolder, loaded: Subject) -> None:
    roi = max(loaded.rois, key=lambda name: loaded.rois[name].sum())
    keep = loaded.rois[roi]
    masked = _load(kind, folder, mask=(roi,))
    check_subject_contract(masked, kind=kind)
    np.testing.assert_array_equal(masked.stimulus_ids, loaded.stimulus_ids)
    np.testing.assert_array_equal(masked.concatenated_index, loaded.concatenated_index[keep])
    np.testing.assert_allclose(masked.responses, loaded.responses[:, keep], rtol=1e-6)
    np.testing.assert_allclose(masked.noise_ceiling, loaded.noise_ceiling[keep], rtol=1e-6)
    assert masked.rois[roi].all()


def test_every_folder_writer_belongs_to_a_registered_reader() -> None:
    assert set(SUBJECT_FOLDERS) <= set(KINDS), sorted(set(SUBJECT_FOLDERS) - set(KINDS))


def test_whole_nan_rows_are_named_as_rows_not_as_every_vertex():
    """Two NaN image rows make every vertex column non-finite; the message says which rows, not 'every vertex'."""
    responses = np.ones((6, 10), dtype=np.float32)
    responses[[1, 4]] = np.nan
    with pytest.raises(InvalidInputError) as caught:
        finite_vertices([responses], where="subj01/train.npy", block=3)
    message = str(caught.value)
    assert "whole image rows are NaN/Inf" in message and "first [1, 4]" in message and "every one of" not in message
