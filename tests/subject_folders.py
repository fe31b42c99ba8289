"""Tiny subject folders on disk, one writer per subject data kind, in each release's exact file formats.

``SUBJECT_FOLDERS`` maps every kind in ``pipeline.subjects.READERS`` to a writer that
returns where ``load_subject`` finds the subject; the reader contract test runs over it,
and fails for a registered reader that has none.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.io
from PIL import Image

from builders import SYNTHETIC_FEATURES, image_folder, random_store
from pipeline.runroot import synthetic_root
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.generate import synthesize_subject

#: Vertices per hemisphere of fsaverage: the length of every fsaverage-space file.
N_FS = 163_842


@dataclass(frozen=True)
class SubjectFolder:
    """Where a written subject is read from: ``load_subject(kind, subject, root=root, options=options)``."""

    root: Path
    subject: int | str
    options: dict = field(default_factory=dict)


def fsaverage_labels(pairs: dict[int, int]) -> np.ndarray:
    """int32 array of shape (N_FS,): ``label`` at each ``index`` of ``pairs``, 0 elsewhere."""
    labels = np.zeros(N_FS, dtype=np.int32)
    for index, label in pairs.items():
        labels[index] = label
    return labels


# ------------------------------------------------------------------ Algonauts 2023
ALGONAUTS_LH = np.array([5, 17, 100, 2000, 9000])
ALGONAUTS_RH = np.array([3, 50, 700, 10_000])
ALGONAUTS_PRF = {0: "Unknown", 1: "V1v", 2: "V1d", 7: "hV4"}
ALGONAUTS_FACES = {0: "Unknown", 1: "OFA", 2: "FFA-1"}


def _write_nsd_images(folder: Path, prefix: str, nsd_ids: list[int]) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(nsd_ids))
    for row in reversed(range(len(nsd_ids))):  # written out of order: the reader must sort
        pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{prefix}-{row + 1:04d}_nsd-{nsd_ids[row]:05d}.png")


def write_algonauts(root: Path, number: int = 1, *, n_train: int = 8, n_test: int = 3, test_fmri: bool = True,
                    noise_ceiling: str | None = "percent", seed: int = 0) -> dict[str, np.ndarray]:
    """An Algonauts-layout subject folder ``root/subjNN``; returns the arrays written.

    Vertices ``ALGONAUTS_LH`` and ``ALGONAUTS_RH``; ``noise_ceiling`` is written in
    ``"percent"`` (as released) or as a ``"fraction"``, or not at all (None).
    """
    rng = np.random.default_rng(seed)
    folder = root / f"subj{number:02d}"
    written: dict[str, np.ndarray] = {}
    train_ids = sorted(rng.choice(73_000, n_train + n_test, replace=False).tolist())
    _write_nsd_images(folder / "training_split" / "training_images", "train", train_ids[:n_train])
    _write_nsd_images(folder / "test_split" / "test_images", "test", train_ids[n_train:])
    written["train_ids"], written["test_ids"] = np.array(train_ids[:n_train]), np.array(train_ids[n_train:])
    for split, n_rows, stem in (("training", n_train, "training"), ("test", n_test, "test")):
        if split == "test" and not test_fmri:
            continue
        fmri_dir = folder / f"{split}_split" / f"{split}_fmri"
        fmri_dir.mkdir(parents=True)
        for hemi, idx in (("lh", ALGONAUTS_LH), ("rh", ALGONAUTS_RH)):
            array = rng.standard_normal((n_rows, idx.size)).astype(np.float32)
            np.save(fmri_dir / f"{hemi}_{stem}_fmri.npy", array)
            written[f"{hemi}_{split}"] = array
    roi_dir = folder / "roi_masks"
    roi_dir.mkdir()
    for hemi, idx in (("lh", ALGONAUTS_LH), ("rh", ALGONAUTS_RH)):
        np.save(roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy", fsaverage_labels({i: 1 for i in idx}))
    np.save(roi_dir / "lh.prf-visualrois_fsaverage_space.npy", fsaverage_labels({5: 1, 17: 2, 100: 7, 4: 1}))
    np.save(roi_dir / "rh.prf-visualrois_fsaverage_space.npy", fsaverage_labels({3: 1, 50: 2}))
    np.save(roi_dir / "lh.floc-faces_fsaverage_space.npy", fsaverage_labels({2000: 2}))
    np.save(roi_dir / "rh.floc-faces_fsaverage_space.npy", fsaverage_labels({700: 1, 10_000: 2}))
    np.save(roi_dir / "lh.prf-visualrois_challenge_space.npy", np.array([1, 2, 7, 0, 0]))  # not read
    np.save(roi_dir / "mapping_prf-visualrois.npy", ALGONAUTS_PRF)
    np.save(roi_dir / "mapping_floc-faces.npy", {np.int64(k): v for k, v in ALGONAUTS_FACES.items()})
    if noise_ceiling:
        nc_dir = folder / "test_split" / "noise_ceiling"
        nc_dir.mkdir()
        scale = 100.0 if noise_ceiling == "percent" else 1.0
        for hemi, idx in (("lh", ALGONAUTS_LH), ("rh", ALGONAUTS_RH)):
            fraction = rng.uniform(0.05, 0.9, idx.size)
            np.save(nc_dir / f"{hemi}_noise_ceiling.npy", fraction * scale)
            written[f"{hemi}_nc"] = fraction
    return written


# ------------------------------------------------------------------ NSD (fsaverage betas)
NSD_TRIALS = 6  # trials per session (750 in NSD)
NSD_GENERAL = {"lh": np.array([10, 20, 30, 40]), "rh": np.array([11, 21, 31])}
NSD_NAN_VERTEX = ("rh", 21)  # a NaN beta in one session, as in subjects 6 and 8
NSD_SUBJECTIM_ROW = np.array([101, 5, 73_000, 40, 7, 900, 12, 3])  # 1-based 73k ids of subject 2's images
NSD_SHARED = np.array([40, 900, 55])  # 1-based 73k ids
# 3 sessions x 6 trials, 1-based indices into the subject's 8 images: repeats 3, 3, 2, 2, 3, 1, 2, 2
NSD_ORDER = np.array([1, 2, 3, 1, 4, 5,   2, 6, 1, 7, 3, 8,   5, 2, 4, 5, 7, 8])


def save_mgh(path: Path, data: np.ndarray) -> None:
    """``data`` as an MGH/MGZ image (identity affine), as NSD ships its fsaverage files."""
    nib.save(nib.MGHImage(data, np.eye(4)), path)


def write_nsd(root: Path, *, sessions: int = 3) -> dict[str, np.ndarray]:
    """An NSD root holding subject 2 (``subj02``), ``NSD_TRIALS`` trials per session; returns the arrays written."""
    rng = np.random.default_rng(0)
    design = root / "nsddata" / "experiments" / "nsd"
    design.mkdir(parents=True)
    subjectim = rng.integers(1, 73_000, (8, 8))
    subjectim[1] = NSD_SUBJECTIM_ROW
    scipy.io.savemat(design / "nsd_expdesign.mat", {"masterordering": NSD_ORDER[None, :].astype(np.float64),
                                                     "subjectim": subjectim.astype(np.float64),
                                                     "sharedix": NSD_SHARED[None, :].astype(np.float64)})
    betas_dir = root / "nsddata_betas" / "ppdata" / "subj02" / "fsaverage" / "betas_fithrf_GLMdenoise_RR"
    betas_dir.mkdir(parents=True)
    labels = root / "nsddata" / "freesurfer" / "fsaverage" / "label"
    labels.mkdir(parents=True)
    written = {}
    for hemi, idx in NSD_GENERAL.items():
        general = np.zeros((N_FS, 1, 1), dtype=np.int32)
        general[idx] = 1
        general[5] = -1  # outside-brain code: not a kept vertex
        save_mgh(labels / f"{hemi}.nsdgeneral.mgz", general)
        for session in range(1, sessions + 1):
            betas = np.zeros((N_FS, 1, 1, NSD_TRIALS), dtype=np.float32)
            values = rng.normal(2.0, 3.0, (idx.size, NSD_TRIALS)).astype(np.float32)
            if (hemi, session) == (NSD_NAN_VERTEX[0], 2):
                values[list(idx).index(NSD_NAN_VERTEX[1]), 4] = np.nan
            betas[idx, 0, 0, :] = values
            save_mgh(betas_dir / f"{hemi}.betas_session{session:02d}.mgh", betas)
            written[f"{hemi}{session}"] = values
        snr = np.zeros((N_FS, 1, 1), dtype=np.float32)
        snr[idx, 0, 0] = rng.uniform(0.2, 1.5, idx.size)
        save_mgh(betas_dir / f"{hemi}.ncsnr.mgh", snr)
        written[f"{hemi}_snr"] = snr[idx, 0, 0]
        prf = np.zeros((N_FS, 1, 1), dtype=np.int32)
        prf[idx[:2], 0, 0] = [1, 3]
        save_mgh(labels / f"{hemi}.prf-visualrois.mgz", prf)
        faces = np.zeros((N_FS, 1, 1), dtype=np.int32)
        faces[idx[-1], 0, 0] = 2
        save_mgh(labels / f"{hemi}.floc-faces.mgz", faces)
    (labels / "prf-visualrois.mgz.ctab").write_text("0 Unknown\n1 V1v\n2 V1d\n3 V2v\n")
    return written


# ------------------------------------------------------------------ generic
#: Concatenated fsaverage indices (right hemisphere + N_FS) of the generic subject's vertices.
GENERIC_VERTICES = np.array([12, 3, 400, N_FS + 7, N_FS + 9000])


def write_generic(folder: Path, *, n_images: int = 10, fmt: str = "npy", vertex_fmt: str = "npy") -> np.ndarray:
    """A generic subject folder (images, responses as .npy or Parquet, vertices as .npy or .txt); returns the responses."""
    rng = np.random.default_rng(1)
    (folder / "images").mkdir(parents=True)
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 255, (18, 18, 3), dtype=np.uint8)).save(folder / "images" / f"img{i:02d}.png")
    responses = rng.standard_normal((n_images, GENERIC_VERTICES.size)).astype(np.float32)
    if fmt == "npy":
        np.save(folder / "responses.npy", responses)
    else:
        table = pa.table({f"v{c}": responses[:, i] for i, c in enumerate(GENERIC_VERTICES)})
        pq.write_table(table, folder / "responses.parquet")
    if vertex_fmt == "npy":
        np.save(folder / "vertices.npy", GENERIC_VERTICES)
    else:
        (folder / "vertices.txt").write_text("\n".join(map(str, GENERIC_VERTICES)) + "\n")
    (folder / "rois.json").write_text(json.dumps({"V1": [12, 3, N_FS + 7, 99], "FFA": [400]}))
    np.save(folder / "noise_ceiling.npy", np.linspace(0.1, 0.5, GENERIC_VERTICES.size))
    return responses


# ------------------------------------------------------------------ synthetic
def write_synthetic(run_root: Path, number: int = 1) -> None:
    """A synthetic subject planted on a small random store, as ``bddn synth`` makes it under ``run_root``."""
    store = random_store(run_root / "features.zarr", n_images=24, **SYNTHETIC_FEATURES)
    files = image_folder(run_root / "images", store.image_ids.tolist())
    synthesize_subject(store, files, synthetic_root(run_root), number, cfg=SyntheticConfig(vertices_per_hemisphere=50),
                       seed=0, model="random-test")


# ------------------------------------------------------------------ one small subject per registered kind
def _algonauts(root: Path) -> SubjectFolder:
    write_algonauts(root)
    return SubjectFolder(root, 1)


def _synthetic(root: Path) -> SubjectFolder:
    write_synthetic(root)
    return SubjectFolder(root, 1)


def _nsd(root: Path) -> SubjectFolder:
    write_nsd(root)
    return SubjectFolder(root, 2, {"trials_per_session": NSD_TRIALS})


def _generic(root: Path) -> SubjectFolder:
    write_generic(root / "subj01")
    return SubjectFolder(root, 1)


#: Subject data kind -> writer of one small subject under a given empty folder.
SUBJECT_FOLDERS: dict[str, Callable[[Path], SubjectFolder]] = {
    "algonauts": _algonauts, "synthetic": _synthetic, "nsd": _nsd, "generic": _generic}
