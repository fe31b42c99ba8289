"""The NSD fsaverage-betas reader on a tiny NSD folder in the release's file formats (``subject_folders``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.stats

from cache.errors import InvalidInputError, MissingInputError
from pipeline.subjects import load_subject, read_nsd
from subject_folders import (
    N_FS, NSD_ORDER as ORDER, NSD_SUBJECTIM_ROW as SUBJECTIM_ROW, NSD_TRIALS as T, save_mgh, write_nsd,
)


def _oracle(written: dict[str, np.ndarray], hemi: str, sessions: int = 3) -> dict[int, np.ndarray]:
    """73k id (0-based) -> mean over repeats of per-session z-scored betas, by plain loops."""
    trials: dict[int, list[np.ndarray]] = {}
    for session in range(1, sessions + 1):
        z = scipy.stats.zscore(written[f"{hemi}{session}"].astype(np.float64), axis=1)
        for t in range(T):
            image = SUBJECTIM_ROW[ORDER[(session - 1) * T + t] - 1] - 1
            trials.setdefault(int(image), []).append(z[:, t])
    return {image: np.mean(values, axis=0) for image, values in trials.items()}


def test_nsd_fixture_round_trip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    written = write_nsd(tmp_path)
    with caplog.at_level(logging.WARNING):
        subject = read_nsd(tmp_path, 2, trials_per_session=T, split_seed=1)
    assert "dropped 1 of 3 vertices" in caplog.text
    ids = sorted(SUBJECTIM_ROW - 1)
    assert subject.stimulus_ids.tolist() == [f"nsd-{i:05d}" for i in ids]
    assert subject.hemisphere.tolist() == ["lh"] * 4 + ["rh"] * 2
    assert subject.fsaverage_index.tolist() == [10, 20, 30, 40, 11, 31]
    lh, rh = _oracle(written, "lh"), _oracle(written, "rh")
    expected = np.array([np.concatenate([lh[i], rh[i][[0, 2]]]) for i in ids])
    np.testing.assert_allclose(subject.responses, expected, rtol=1e-5, atol=1e-5)
    # noise ceiling from ncsnr with k = mean(1/n) over images (repeats 3,3,2,2,3,1,2,2)
    k = np.mean(1 / np.array([3, 3, 2, 2, 3, 1, 2, 2]))
    snr = np.concatenate([written["lh_snr"], written["rh_snr"][[0, 2]]]).astype(np.float64)
    np.testing.assert_allclose(subject.noise_ceiling, snr**2 / (snr**2 + k), rtol=1e-5)
    # shared images (sharedix 40 and 900, 1-based) are the test split
    assert sorted(subject.stimulus_ids[subject.splits["test"]].tolist()) == ["nsd-00039", "nsd-00899"]
    # ROI names from the ctab, and the NSD defaults where no ctab is present
    assert np.flatnonzero(subject.rois["V1v"]).tolist() == [0, 4]
    assert np.flatnonzero(subject.rois["V2v"]).tolist() == [1]  # rh 21 (label 3) was dropped
    assert np.flatnonzero(subject.rois["FFA-1"]).tolist() == [3, 5]
    assert subject.source["reader"] == "nsd" and subject.mesh == "fsaverage5"


def test_nsd_session_subset_random_test_and_mask(tmp_path: Path) -> None:
    written = write_nsd(tmp_path)
    subject = load_subject("nsd", "subj02", root=tmp_path, mask=("FFA-1",),
                           options={"sessions": [1], "trials_per_session": T, "test": "random"},
                           test_fraction=0.2, val_fraction=0.0)
    assert subject.n_images == 5 and subject.splits["test"].size == 1
    lh = _oracle(written, "lh", sessions=1)
    ids = sorted(lh)
    np.testing.assert_allclose(subject.responses[:, 0], [lh[i][3] for i in ids], rtol=1e-5, atol=1e-5)
    assert subject.concatenated_index.tolist() == [40, 31 + N_FS]
    # only one repeat per image in session 1 except image 1 (twice): k = mean(1/n)
    k = np.mean(1 / np.array([2, 1, 1, 1, 1]))
    np.testing.assert_allclose(subject.noise_ceiling[0], written["lh_snr"][3] ** 2 / (written["lh_snr"][3] ** 2 + k),
                               rtol=1e-5)


def _break(case: str, root: Path) -> str:
    betas = root / "nsddata_betas/ppdata/subj02/fsaverage/betas_fithrf_GLMdenoise_RR"
    design = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    labels = root / "nsddata/freesurfer/fsaverage/label"
    if case == "missing design":
        design.unlink()
        return "nsd_expdesign.mat does not exist"
    if case == "design not mat":
        design.write_bytes(b"not a matlab file at all")
        return "nsd_expdesign.mat is not a readable MATLAB file"
    if case == "design lacks subjectim":
        scipy.io.savemat(design, {"masterordering": ORDER[None, :]})
        return "nsd_expdesign.mat lacks the variable 'subjectim'"
    if case == "ordering out of range":
        scipy.io.savemat(design, {"masterordering": (ORDER + 20)[None, :], "subjectim": np.ones((8, 8))})
        return "masterordering must hold 1-based indices 1..8"
    if case == "missing rh session":
        (betas / "rh.betas_session02.mgh").unlink()
        return "rh.betas_session02.mgh does not exist"
    if case == "wrong trial count":
        save_mgh(betas / "lh.betas_session03.mgh", np.zeros((N_FS, 1, 1, T + 1), dtype=np.float32))
        return "lh.betas_session03.mgh have shape (163842, 1, 1, 7)"
    if case == "corrupt betas":
        (betas / "lh.betas_session01.mgh").write_bytes(b"\x00" * 100)
        return "lh.betas_session01.mgh is not a readable MGH/MGZ file"
    if case == "label length":
        save_mgh(labels / "rh.nsdgeneral.mgz", np.ones((10_242, 1, 1), dtype=np.int32))
        return "rh.nsdgeneral.mgz has shape (10242,)"
    if case == "missing nsdgeneral":
        (labels / "lh.nsdgeneral.mgz").unlink()
        return "lh.nsdgeneral.mgz does not exist"
    if case == "missing rh ROI labels":
        (labels / "rh.floc-faces.mgz").unlink()
        return "rh.floc-faces.mgz does not exist"
    if case == "ncsnr NaN":
        save_mgh(betas / "lh.ncsnr.mgh", np.full((N_FS, 1, 1), np.nan, dtype=np.float32))
        return "lh.ncsnr.mgh holds NaN/Inf"
    if case == "all NaN":
        for session in (1, 2, 3):
            save_mgh(betas / f"lh.betas_session{session:02d}.mgh", np.full((N_FS, 1, 1, T), np.nan, dtype=np.float32))
        return "lh.betas_session*.mgh: every one of the 4 vertices"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing design", "design not mat", "design lacks subjectim",
                                  "ordering out of range", "missing rh session", "wrong trial count",
                                  "corrupt betas", "label length", "missing nsdgeneral", "missing rh ROI labels",
                                  "ncsnr NaN", "all NaN"])
def test_nsd_bad_input_names_the_file(tmp_path: Path, case: str) -> None:
    write_nsd(tmp_path)
    fragment = _break(case, tmp_path)
    with pytest.raises((InvalidInputError, MissingInputError)) as caught:
        read_nsd(tmp_path, 2, trials_per_session=T)
    assert fragment in str(caught.value)


def test_nsd_bad_arguments(tmp_path: Path) -> None:
    write_nsd(tmp_path)
    with pytest.raises(InvalidInputError, match="no row for subject 9"):
        read_nsd(tmp_path, 9, trials_per_session=T)
    with pytest.raises(MissingInputError, match=r"sessions \[4\] have no betas"):
        read_nsd(tmp_path, 2, sessions=[1, 4], trials_per_session=T)
    with pytest.raises(InvalidInputError, match="test must be one of"):
        read_nsd(tmp_path, 2, test="shared1000")
    with pytest.raises(InvalidInputError, match="runs past the 18 trials of masterordering"):
        read_nsd(tmp_path, 2, trials_per_session=T + 1, sessions=[3])
