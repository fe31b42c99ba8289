"""The Algonauts 2023 reader on tiny folders in the release's exact file formats (``subject_folders``)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cache.errors import ConfigError, InvalidInputError, MissingInputError
from pipeline.runroot import synthetic_root
from pipeline.subjects import load_subject, read_algonauts
from pipeline.surfaces import load_mesh
from subject_folders import ALGONAUTS_LH as LH, ALGONAUTS_RH as RH, N_FS, fsaverage_labels, write_algonauts


def test_round_trip_matches_the_written_arrays(tmp_path: Path) -> None:
    written = write_algonauts(tmp_path)
    subject = read_algonauts(tmp_path, 1, split_seed=3)
    assert subject.name == "subj01"
    expected = np.vstack([np.hstack([written["lh_training"], written["rh_training"]]),
                          np.hstack([written["lh_test"], written["rh_test"]])])
    np.testing.assert_array_equal(subject.responses, expected)
    ids = [f"nsd-{i:05d}" for i in np.concatenate([written["train_ids"], written["test_ids"]])]
    assert subject.stimulus_ids.tolist() == ids
    assert subject.hemisphere.tolist() == ["lh"] * 5 + ["rh"] * 4
    np.testing.assert_array_equal(subject.fsaverage_index, np.concatenate([LH, RH]))
    np.testing.assert_array_equal(subject.concatenated_index, np.concatenate([LH, RH + N_FS]))
    # the data's own test split: the test images' rows
    np.testing.assert_array_equal(subject.splits["test"], np.arange(8, 11))
    assert subject.splits["train"].size + subject.splits["val"].size == 8
    assert subject.split_seed == 3
    # percent on disk -> fraction
    np.testing.assert_allclose(subject.noise_ceiling, np.concatenate([written["lh_nc"], written["rh_nc"]]), rtol=1e-6)
    assert "percent" in subject.source["noise_ceiling"]
    # ROIs from every class, over the kept vertices; label 1 at lh 4 is not a challenge vertex
    assert sorted(subject.rois) == ["FFA-1", "OFA", "V1d", "V1v", "hV4"]
    assert np.flatnonzero(subject.rois["V1v"]).tolist() == [0, 5]
    assert np.flatnonzero(subject.rois["FFA-1"]).tolist() == [3, 8]
    assert np.flatnonzero(subject.rois["OFA"]).tolist() == [7]
    assert subject.mesh == "fsaverage5"  # every index < 10242


def test_sphere_coordinates_come_from_the_fsaverage_sphere(tmp_path: Path) -> None:
    write_algonauts(tmp_path)
    subject = read_algonauts(tmp_path, 1, mask=("prf-visualrois",))
    sphere = load_mesh("fsaverage5", "sphere")
    lh = subject.hemisphere == "lh"
    np.testing.assert_allclose(subject.sphere_coords[lh], sphere.lh.coords[subject.fsaverage_index[lh]], atol=1e-4)
    rh = ~lh
    shift = subject.sphere_coords[rh] - sphere.rh.coords[subject.fsaverage_index[rh]]
    np.testing.assert_allclose(shift[:, 1:], 0, atol=1e-4)  # only x moves
    assert np.ptp(shift[:, 0]) < 1e-3 and shift[0, 0] > 0


def test_mask_by_class_and_by_roi_name(tmp_path: Path) -> None:
    write_algonauts(tmp_path)
    by_class = read_algonauts(tmp_path, 1, mask=("prf-visualrois",))
    assert by_class.concatenated_index.tolist() == [5, 17, 100, 3 + N_FS, 50 + N_FS]
    by_name = read_algonauts(tmp_path, 1, mask=("FFA-1", "OFA"))
    assert by_name.concatenated_index.tolist() == [2000, 700 + N_FS, 10_000 + N_FS]
    assert by_name.rois["FFA-1"].tolist() == [True, False, True]
    with pytest.raises(InvalidInputError, match="'V9'.*FFA-1"):
        read_algonauts(tmp_path, 1, mask=("V9",))


def test_nan_vertices_are_dropped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    written = write_algonauts(tmp_path)
    lh = written["lh_training"].copy()
    lh[2, 1] = np.nan
    lh[0, 3] = np.inf
    np.save(tmp_path / "subj01/training_split/training_fmri/lh_training_fmri.npy", lh)
    with caplog.at_level(logging.WARNING):
        subject = read_algonauts(tmp_path, 1)
    assert "dropped 2 of 5 vertices" in caplog.text
    assert subject.fsaverage_index[subject.hemisphere == "lh"].tolist() == [5, 100, 9000]
    np.testing.assert_array_equal(subject.responses[:8, :3], lh[:, [0, 2, 4]])
    assert subject.noise_ceiling.shape == (7,)
    assert np.flatnonzero(subject.rois["V1d"]).tolist() == [4]  # lh 17 dropped, rh 50 kept
    assert np.flatnonzero(subject.rois["V1v"]).tolist() == [0, 3]


def test_missing_test_fmri_holds_out_a_seeded_fraction(tmp_path: Path) -> None:
    write_algonauts(tmp_path, n_train=40, test_fmri=False, noise_ceiling="fraction")
    first = read_algonauts(tmp_path, 1, split_seed=5, test_fraction=0.2, val_fraction=0.25)
    again = read_algonauts(tmp_path, 1, split_seed=5, test_fraction=0.2, val_fraction=0.25)
    other = read_algonauts(tmp_path, 1, split_seed=6, test_fraction=0.2, val_fraction=0.25)
    assert first.n_images == 40  # the test images without fMRI are not rows
    assert [first.splits[k].size for k in ("train", "val", "test")] == [24, 8, 8]
    for key in first.splits:
        np.testing.assert_array_equal(first.splits[key], again.splits[key])
    assert not np.array_equal(first.splits["test"], other.splits["test"])
    assert np.array_equal(np.sort(np.concatenate(list(first.splits.values()))), np.arange(40))
    assert "fraction" in first.source["noise_ceiling"] and first.noise_ceiling.max() <= 0.9


def test_subject_folder_given_directly_and_by_name(tmp_path: Path) -> None:
    write_algonauts(tmp_path, 2, noise_ceiling=None)
    assert read_algonauts(tmp_path / "subj02", 2).noise_ceiling is None
    assert read_algonauts(tmp_path, "subj02").n_images == 11
    with pytest.raises(MissingInputError, match="subj03.*subj02"):
        read_algonauts(tmp_path, 3)
    with pytest.raises(InvalidInputError, match="is itself the subject folder 'subj02', not 'subj01'"):
        read_algonauts(tmp_path / "subj02", 1)


def test_load_subject_dispatch(tmp_path: Path) -> None:
    run_root = tmp_path / "runs"
    write_algonauts(synthetic_root(run_root), 1)
    subject = load_subject("synthetic", 1, root=run_root)
    assert subject.source["reader"] == "synthetic" and subject.n_vertices == 9
    with pytest.raises(InvalidInputError, match="noise_ceiling.*read as a fraction.*'fraction'"):
        load_subject("algonauts", "1", root=synthetic_root(run_root), options={"noise_ceiling_units": "fraction"})
    with pytest.raises(InvalidInputError, match="valid kinds: \\['algonauts', 'generic', 'nsd', 'synthetic'\\]"):
        load_subject("hcp", 1, root=run_root)
    with pytest.raises(ConfigError, match="sessions.*noise_ceiling_units"):
        load_subject("synthetic", 1, root=run_root, options={"sessions": [1]})


class _OpensAFile:
    """A pickle payload that would create a file if a loader unpickled it freely."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (open, (str(self.target), "w"))


def _write_object_npy(path: Path, payload: object) -> None:
    from numpy.lib import format as npy_format

    with open(path, "wb") as handle:
        npy_format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": ()})
        handle.write(pickle.dumps(payload, protocol=4))


def _break(case: str, folder: Path) -> str:
    """Damage a written subject folder one way; return a fragment the error must contain."""
    fmri = folder / "training_split" / "training_fmri"
    rois = folder / "roi_masks"
    if case == "missing fMRI":
        (fmri / "lh_training_fmri.npy").unlink()
        return "lh_training_fmri.npy"
    if case == "missing vertex mask":
        (rois / "rh.all-vertices_fsaverage_space.npy").unlink()
        return "rh.all-vertices_fsaverage_space.npy"
    if case == "mask length":
        np.save(rois / "lh.all-vertices_fsaverage_space.npy", np.ones(10_242, dtype=np.int64))
        return "lh.all-vertices_fsaverage_space.npy has shape (10242,); expected (163842,)"
    if case == "label length":
        np.save(rois / "rh.floc-faces_fsaverage_space.npy", np.zeros(40_962, dtype=np.int64))
        return "rh.floc-faces_fsaverage_space.npy has shape (40962,)"
    if case == "row count":
        sorted((folder / "training_split" / "training_images").iterdir())[-1].unlink()
        return "lh_training_fmri.npy has 8 rows but"
    if case == "column count":
        np.save(fmri / "rh_training_fmri.npy", np.zeros((8, 3), dtype=np.float32))
        return "rh_training_fmri.npy has 3 vertex columns but"
    if case == "mapping not a dict":
        np.save(rois / "mapping_floc-faces.npy", np.arange(3))
        return "mapping_floc-faces.npy holds a numeric array"
    if case == "mapping list":
        _write_object_npy(rois / "mapping_floc-faces.npy", np.array(["OFA", "FFA-1"], dtype=object))
        return "mapping_floc-faces.npy holds ndarray"
    if case == "mapping values":
        np.save(rois / "mapping_prf-visualrois.npy", {1: 2.5})
        return "mapping_prf-visualrois.npy has entry 1: 2.5"
    if case == "mapping code":
        _write_object_npy(rois / "mapping_prf-visualrois.npy", _OpensAFile(folder / "pwned"))
        return "mapping_prf-visualrois.npy is not a pickled dict"
    if case == "missing mapping":
        (rois / "mapping_floc-faces.npy").unlink()
        return "mapping_floc-faces.npy does not exist"
    if case == "unnamed label":
        np.save(rois / "lh.floc-faces_fsaverage_space.npy", fsaverage_labels({2000: 9}))
        return "floc-faces_fsaverage_space.npy with mapping_floc-faces.npy: labels [9]"
    if case == "missing hemisphere labels":
        (rois / "rh.prf-visualrois_fsaverage_space.npy").unlink()
        return "rh.prf-visualrois_fsaverage_space.npy does not exist"
    if case == "text fMRI":
        np.save(fmri / "lh_training_fmri.npy", np.full((8, 5), "x"))
        return "lh_training_fmri.npy has dtype <U1"
    if case == "pickled fMRI":
        _write_object_npy(fmri / "lh_training_fmri.npy", np.zeros((8, 5)))
        return "lh_training_fmri.npy cannot be read as a plain .npy array"
    if case == "all NaN":
        np.save(fmri / "lh_training_fmri.npy", np.full((8, 5), np.nan, dtype=np.float32))
        return "lh_training_fmri.npy and"
    if case == "one test hemisphere":
        (folder / "test_split" / "test_fmri" / "rh_test_fmri.npy").unlink()
        return "rh_test_fmri.npy does not exist"
    if case == "noise ceiling length":
        np.save(folder / "test_split" / "noise_ceiling" / "lh_noise_ceiling.npy", np.ones(4))
        return "lh_noise_ceiling.npy has shape (4,)"
    if case == "negative noise ceiling":
        np.save(folder / "test_split" / "noise_ceiling" / "rh_noise_ceiling.npy", -np.ones(4))
        return "rh_noise_ceiling.npy holds NaN/Inf or negative"
    raise AssertionError(case)


BAD_CASES = ["missing fMRI", "missing vertex mask", "mask length", "label length", "row count", "column count",
             "mapping not a dict", "mapping list", "mapping values", "mapping code", "missing mapping",
             "unnamed label", "missing hemisphere labels", "text fMRI", "pickled fMRI", "all NaN",
             "one test hemisphere", "noise ceiling length", "negative noise ceiling"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_an_error_naming_the_file(tmp_path: Path, case: str) -> None:
    write_algonauts(tmp_path)
    fragment = _break(case, tmp_path / "subj01")
    with pytest.raises((InvalidInputError, MissingInputError)) as caught:
        read_algonauts(tmp_path, 1)
    assert fragment in str(caught.value)
    assert not (tmp_path / "subj01" / "pwned").exists()


def test_safe_mapping_loader_refuses_what_numpy_would_run(tmp_path: Path) -> None:
    path = tmp_path / "mapping_x.npy"
    _write_object_npy(path, _OpensAFile(tmp_path / "pwned"))
    np.load(path, allow_pickle=True)  # the unsafe loader runs the payload ...
    assert (tmp_path / "pwned").exists()
    (tmp_path / "pwned").unlink()
    from pipeline.subjects.files import load_label_mapping

    with pytest.raises(InvalidInputError, match="refusing to load io.open"):  # ... the reader's does not
        load_label_mapping(path)
    assert not (tmp_path / "pwned").exists()


def test_reads_what_the_synthetic_writer_writes(tmp_path: Path) -> None:
    from pipeline.synthetic.layout import write_algonauts_subject

    source = tmp_path / "images"
    source.mkdir()
    for i in range(7):
        Image.fromarray(np.full((20, 20, 3), i * 30, dtype=np.uint8)).save(source / f"demo-{i:05d}.png")
    files = sorted(source.iterdir())
    rng = np.random.default_rng(2)
    hemisphere = np.array(["lh", "lh", "lh", "rh", "rh"])
    index = np.array([4, 80, 900, 6, 70])
    responses = {"train": rng.standard_normal((5, 5)), "test": rng.standard_normal((2, 5))}
    ceiling = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    folder = synthetic_root(tmp_path / "runs") / "subj02"
    write_algonauts_subject(folder, images={"train": files[:5], "test": files[5:]}, responses=responses,
                            hemisphere=hemisphere, fsaverage_index=index,
                            roi_labels={"prf-visualrois": np.array([1, 2, 0, 1, 0])},
                            roi_names={"prf-visualrois": {0: "Unknown", 1: "V1", 2: "V2"}}, noise_ceiling=ceiling)
    subject = load_subject("synthetic", 2, root=tmp_path / "runs")
    assert subject.stimulus_ids.tolist() == [f"demo-{i:05d}" for i in range(7)]
    np.testing.assert_allclose(subject.responses, np.vstack([responses["train"], responses["test"]]), rtol=1e-6)
    np.testing.assert_array_equal(subject.fsaverage_index, index)
    assert subject.hemisphere.tolist() == hemisphere.tolist()
    np.testing.assert_array_equal(subject.splits["test"], [5, 6])
    np.testing.assert_allclose(subject.noise_ceiling, ceiling, rtol=1e-6)
    assert subject.rois["V1"].tolist() == [True, False, False, True, False]
    assert "fraction" in subject.source["noise_ceiling"]
