"""Read one subject of the Natural Scenes Dataset from its fsaverage betas.

Files under the NSD root (as released)::

    nsddata_betas/ppdata/subjXX/fsaverage/betas_fithrf_GLMdenoise_RR/{lh,rh}.betas_sessionNN.mgh
        float32 (163842, 1, 1, 750): one beta per vertex per trial of session NN
    nsddata_betas/ppdata/subjXX/fsaverage/betas_fithrf_GLMdenoise_RR/{lh,rh}.ncsnr.mgh  (optional)
    nsddata/experiments/nsd/nsd_expdesign.mat     masterordering (1-based, into the subject's
                                                  10k images), subjectim (8, 10000, 1-based 73k ids),
                                                  sharedix (1-based 73k ids of the shared images)
    nsddata/freesurfer/fsaverage/label/{lh,rh}.nsdgeneral.mgz      the vertices kept
    nsddata/freesurfer/fsaverage/label/{lh,rh}.<class>.mgz         ROI labels (optional), names from
                                                  ``<class>.mgz.ctab`` beside them, else the NSD defaults

Processing: trial t of the experiment (0-based over sessions, ``trials_per_session``
per session) showed the subject's image ``masterordering[t]``; each session's betas
are z-scored per vertex over that session's trials; repeats of an image are averaged
into one row; rows are ordered by NSD 73k id. Stimulus ids are ``nsd-%05d`` of the
**0-based** 73k index, the numbering of the Algonauts 2023 file names
(``train-0001_nsd-00013.png``), so a feature store built from NSD images named that
way serves both readers. Vertices with a NaN/Inf beta (or no variance) in any
session are dropped, counted in the log.

Test split: NSD's shared images (``sharedix``, the 1,000 images every subject saw) are
the conventional held-out set and form the test split when any of them was read
(``test="shared"``); ``test="random"``, or a design file without ``sharedix``, holds
out a seeded fraction instead.

Noise ceiling: ``NC = ncsnr^2 / (ncsnr^2 + k)`` with ``k`` the mean of ``1/n_i`` over
the images, ``n_i`` the repeats averaged into image i. With every image seen the same
``n`` times this is the NSD formula for ``n``; with partial sessions (some images seen
fewer times) it is the expected ceiling of the mixed rows, as in the Algonauts 2023
preparation. A fraction 0..1 (NSD's own maps are in percent).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.io

from cache.errors import InvalidInputError, MissingInputError
from pipeline.subjects.assemble import assemble_subject, finite_vertices, subject_label
from pipeline.subjects.files import check_surface_labels, require_file
from pipeline.subjects.rois import (DEFAULT_ROI_NAMES, ROI_CLASSES, describe_mask, parse_color_table,
                                    roi_masks_from_labels, select_vertices)
from stages.mesh import FSAVERAGE7_VERTICES, HEMISPHERES
from stages.subject import Subject

log = logging.getLogger(__name__)

BETAS = "betas_fithrf_GLMdenoise_RR"
TRIALS_PER_SESSION = 750
TEST_CHOICES = ("shared", "random")
_SESSION = re.compile(r"^lh\.betas_session(\d+)\.mgh$")


def read_nsd(root: Path, subject: int | str, *, sessions: Sequence[int] | None = None,
             trials_per_session: int = TRIALS_PER_SESSION, test: str = "shared", split_seed: int = 0,
             val_fraction: float = 0.1, test_fraction: float = 0.1, mask: Sequence[str] | None = None,
             subjects_dir: Path | None = None) -> Subject:
    """Read NSD subject ``subject`` (1..8) from the NSD folder ``root`` into a :class:`Subject`.

    Args:
        root: the NSD root (holding ``nsddata`` and ``nsddata_betas``).
        subject: ``1`` -> ``subj01`` (row 0 of ``subjectim``).
        sessions: 1-based session numbers to read; None reads every session file present.
        trials_per_session: trials in each session file (750 in NSD).
        test: ``"shared"`` (shared images as the test split) or ``"random"`` (seeded fraction).
        mask: ``None`` keeps every nsdgeneral vertex; else ROI classes and/or ROI names.
    """
    if test not in TEST_CHOICES:
        raise InvalidInputError(f"test must be one of {list(TEST_CHOICES)}, got {test!r}")
    name = subject_label(subject)
    number = int(name.removeprefix("subj")) if name.removeprefix("subj").isdigit() else 0
    root = Path(root)
    betas_dir = root / "nsddata_betas" / "ppdata" / name / "fsaverage" / BETAS
    label_dir = root / "nsddata" / "freesurfer" / "fsaverage" / "label"
    design = root / "nsddata" / "experiments" / "nsd" / "nsd_expdesign.mat"
    ordering, subject_ids, shared = _trial_images(design, number)
    session_numbers = _session_numbers(betas_dir, sessions)

    general = {}
    for hemi in HEMISPHERES:
        path = require_file(label_dir / f"{hemi}.nsdgeneral.mgz", "nsdgeneral label")
        general[hemi] = np.flatnonzero(check_surface_labels(_read_vertex_map(path), path, "nsdgeneral label") > 0)
    trials = np.concatenate([(s - 1) * trials_per_session + np.arange(trials_per_session) for s in session_numbers])
    if trials.max() >= ordering.size:
        raise InvalidInputError(f"session {session_numbers[-1]} with {trials_per_session} trials per session runs "
                                f"past the {ordering.size} trials of masterordering in nsd_expdesign.mat")
    images, row_of_trial, repeats = np.unique(ordering[trials], return_inverse=True, return_counts=True)
    nsd_ids = subject_ids[images]
    order = np.argsort(nsd_ids, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    row_of_trial = rank[row_of_trial]

    responses, keep = {}, {}
    for hemi in HEMISPHERES:
        paths = [betas_dir / f"{hemi}.betas_session{session:02d}.mgh" for session in session_numbers]
        responses[hemi] = _average_repeats(paths, general[hemi], row_of_trial, repeats[order], trials_per_session)
        keep[hemi] = finite_vertices([responses[hemi]], where=f"{betas_dir}/{hemi}.betas_session*.mgh")

    indices = {h: general[h][keep[h]] for h in HEMISPHERES}
    hemisphere = np.concatenate([np.full(indices[h].size, h) for h in HEMISPHERES])
    fsaverage_index = np.concatenate([indices[h] for h in HEMISPHERES])
    ceiling = _noise_ceiling(betas_dir, indices, repeats)
    labels, names, where = _roi_labels(label_dir, indices)
    rois, classes = roi_masks_from_labels(labels, names, where=where)
    selected = select_vertices(mask, rois, classes, hemisphere.size)
    matrix = np.concatenate([responses[h][:, np.flatnonzero(keep[h])[selected[hemisphere == h]]]
                             for h in HEMISPHERES], axis=1)
    del responses

    shared_rows = np.flatnonzero(np.isin(nsd_ids[order], shared))
    test_rows = shared_rows if test == "shared" and shared_rows.size else None
    if test == "shared" and test_rows is None:
        log.info("%s: none of the read images is a shared image (sharedix); holding out a seeded test fraction",
                 name)
    log.info("%s: %d trials over %d sessions -> %d images (repeats: %s)", name, trials.size, len(session_numbers),
             images.size, dict(zip(*map(np.ndarray.tolist, np.unique(repeats, return_counts=True)))))
    return assemble_subject(
        name=name, stimulus_ids=np.array([f"nsd-{i:05d}" for i in nsd_ids[order]]), responses=matrix,
        hemisphere=hemisphere[selected], fsaverage_index=fsaverage_index[selected],
        rois={k: v[selected] for k, v in rois.items()},
        noise_ceiling=None if ceiling is None else ceiling[selected], test_rows=test_rows,
        split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction, subjects_dir=subjects_dir,
        source={"reader": "nsd", "root": str(root), "sessions": ",".join(map(str, session_numbers)),
                "noise_ceiling": "absent" if ceiling is None else "ncsnr^2 / (ncsnr^2 + mean(1/n_repeats))",
                "mask": describe_mask(mask, default="nsdgeneral")},
    )


def _trial_images(path: Path, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0-based: the subject's image (of 10k) at every trial, the 73k id of each such image, the shared 73k ids."""
    require_file(path, "NSD experiment design")
    try:
        design = scipy.io.loadmat(path, variable_names=["masterordering", "subjectim", "sharedix"])
    except NotImplementedError:
        raise InvalidInputError(f"NSD experiment design {path} is a MATLAB v7.3 (HDF5) file; "
                                "re-save it in MATLAB with save(..., '-v7') as NSD releases it") from None
    except Exception as error:  # scipy raises many types for files that are not MATLAB files
        raise InvalidInputError(f"NSD experiment design {path} is not a readable MATLAB file "
                                f"({type(error).__name__}: {error})") from None
    for key in ("masterordering", "subjectim"):
        if key not in design:
            raise InvalidInputError(f"NSD experiment design {path} lacks the variable {key!r}")
        if design[key].dtype.kind not in "iuf":
            raise InvalidInputError(f"NSD experiment design {path}: {key} has dtype {design[key].dtype}; "
                                    "numbers are required")
    ordering = np.asarray(design["masterordering"]).ravel().astype(np.int64)
    subjectim = np.asarray(design["subjectim"]).astype(np.int64)
    if subjectim.ndim != 2 or not 1 <= number <= subjectim.shape[0]:
        raise InvalidInputError(f"NSD experiment design {path}: subjectim has shape {subjectim.shape}; "
                                f"no row for subject {number} (subjects are 1..{subjectim.shape[0]})")
    if ordering.min() < 1 or ordering.max() > subjectim.shape[1]:
        raise InvalidInputError(f"NSD experiment design {path}: masterordering must hold 1-based indices "
                                f"1..{subjectim.shape[1]}, got {ordering.min()}..{ordering.max()}")
    ids = subjectim[number - 1] - 1
    if ids.min() < 0:
        raise InvalidInputError(f"NSD experiment design {path}: subjectim must hold 1-based 73k ids")
    shared = np.asarray(design.get("sharedix", np.zeros(0))).ravel().astype(np.int64) - 1
    return ordering - 1, ids, shared


def _session_numbers(betas_dir: Path, sessions: Sequence[int] | None) -> list[int]:
    found = sorted(int(m.group(1)) for p in betas_dir.glob("lh.betas_session*.mgh") if (m := _SESSION.match(p.name)))
    if sessions is None:
        if not found:
            raise MissingInputError(f"no session betas in {betas_dir}: expected lh.betas_session01.mgh ... "
                                    "(NSD fsaverage betas, betas_fithrf_GLMdenoise_RR)")
        return found
    chosen = sorted(set(int(s) for s in sessions))
    missing = [s for s in chosen if s not in found]
    if missing or not chosen:
        raise MissingInputError(f"sessions {missing or chosen} have no betas in {betas_dir} "
                                f"(sessions present: {found})")
    return chosen


def _read_surface(path: Path, vertices: np.ndarray | None = None) -> np.ndarray:
    """The data of a FreeSurfer MGH/MGZ file as float32: all of it, or only the rows ``vertices``.

    Selecting rows from the memory-mapped file before converting from its big-endian
    storage reads and converts only those vertices (an NSD session file is 491 MB).
    """
    try:
        proxy = nib.load(path).dataobj
        raw = proxy.get_unscaled() if vertices is None else np.asanyarray(proxy.get_unscaled())[vertices]
        data = np.asarray(raw, dtype=np.float32)
        slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
        return data if (slope, inter) == (1.0, 0.0) else data * np.float32(slope) + np.float32(inter)
    except Exception as error:  # nibabel raises many types for unreadable files
        raise InvalidInputError(f"{path} is not a readable MGH/MGZ file ({type(error).__name__}: {error})") from None


def _read_vertex_map(path: Path) -> np.ndarray:
    """A one-value-per-vertex MGH/MGZ file (labels, ncsnr) as float32 of shape (n_vertices,)."""
    data = _read_surface(path)
    if data.ndim == 0 or int(np.prod(data.shape[1:])) != 1:
        raise InvalidInputError(f"{path} has shape {data.shape}; expected one value per vertex, "
                                f"e.g. ({FSAVERAGE7_VERTICES}, 1, 1)")
    return data.reshape(-1)


def _average_repeats(paths: list[Path], vertices: np.ndarray, row_of_trial: np.ndarray, repeats: np.ndarray,
                     trials_per_session: int) -> np.ndarray:
    """float32 array of shape (n_images, len(vertices)): per-session z-scored betas averaged per image.

    Args:
        paths: one hemisphere's session files, in trial order.
        row_of_trial: output row of every trial read, session after session.
        repeats: trials averaged into each output row.
    """
    sums = np.zeros((repeats.size, vertices.size), dtype=np.float32)
    for position, path in enumerate(paths):
        rows = row_of_trial[position * trials_per_session:(position + 1) * trials_per_session]
        np.add.at(sums, rows, _zscore(_session_betas(path, vertices, trials_per_session)))
    sums /= repeats[:, None].astype(np.float32)
    return sums


def _session_betas(path: Path, vertices: np.ndarray, trials_per_session: int) -> np.ndarray:
    """float32 array of shape (n_trials, len(vertices)): one session's betas at the given vertices."""
    try:
        shape = tuple(int(n) for n in nib.load(require_file(path, "session betas")).shape)
    except Exception as error:  # nibabel raises many types for unreadable files
        raise InvalidInputError(f"{path} is not a readable MGH/MGZ file ({type(error).__name__}: {error})") from None
    if shape != (FSAVERAGE7_VERTICES, 1, 1, trials_per_session):
        raise InvalidInputError(f"session betas {path} have shape {shape}; expected "
                                f"({FSAVERAGE7_VERTICES}, 1, 1, {trials_per_session}) (fsaverage vertices x trials)")
    return np.ascontiguousarray(_read_surface(path, vertices)[:, 0, 0, :].T)


def _zscore(betas: np.ndarray) -> np.ndarray:
    """Per-vertex z-score over the session's trials (population std, as NSD); no variance -> NaN."""
    mean = betas.mean(axis=0, dtype=np.float64)
    std = betas.std(axis=0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (betas - mean) / np.where(std > 0, std, np.nan)
    return z.astype(np.float32)


def _noise_ceiling(betas_dir: Path, indices: dict[str, np.ndarray], repeats: np.ndarray) -> np.ndarray | None:
    paths = {h: betas_dir / f"{h}.ncsnr.mgh" for h in HEMISPHERES}
    if not any(p.is_file() for p in paths.values()):
        log.info("%s: no ncsnr files; the subject has no noise ceiling", betas_dir)
        return None
    snr = []
    for hemi, path in paths.items():
        values = _read_vertex_map(require_file(path, "ncsnr"))
        if values.shape != (FSAVERAGE7_VERTICES,):
            raise InvalidInputError(f"ncsnr {path} has {values.size} values; expected {FSAVERAGE7_VERTICES}")
        values = values[indices[hemi]].astype(np.float64)
        if not np.isfinite(values).all() or values.min() < 0:
            raise InvalidInputError(f"ncsnr {path} holds NaN/Inf or negative values at nsdgeneral vertices")
        snr.append(values)
    snr2 = np.concatenate(snr) ** 2
    k = float(np.mean(1.0 / repeats))
    return snr2 / (snr2 + k)


def _roi_labels(label_dir: Path, indices: dict[str, np.ndarray]
                ) -> tuple[dict[str, np.ndarray], dict[str, dict[int, str]], dict[str, str]]:
    labels, names, where = {}, {}, {}
    for roi_class in ROI_CLASSES:
        paths = [label_dir / f"{h}.{roi_class}.mgz" for h in HEMISPHERES]
        if not any(p.is_file() for p in paths):
            continue
        per_hemi = []
        for hemi, path in zip(HEMISPHERES, paths):
            require_file(path, f"ROI labels of class {roi_class}")
            array = check_surface_labels(_read_vertex_map(path), path, f"ROI labels of class {roi_class}")
            per_hemi.append(np.clip(array, 0, None)[indices[hemi]])
        labels[roi_class] = np.concatenate(per_hemi)
        ctab = label_dir / f"{roi_class}.mgz.ctab"
        if ctab.is_file():
            names[roi_class] = parse_color_table(ctab.read_text(encoding="utf-8"), path=str(ctab))
        else:
            log.info("%s missing; using the NSD default names for %s", ctab, roi_class)
            names[roi_class] = DEFAULT_ROI_NAMES[roi_class]
        where[roi_class] = f"{label_dir}/{{lh,rh}}.{roi_class}.mgz"
    return labels, names, where
