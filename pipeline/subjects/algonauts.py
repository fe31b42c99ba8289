"""Read one subject of the Algonauts 2023 challenge folder layout (also the synthetic subjects' layout).

Layout (``../shared/docs/data-formats.md``)::

    subjXX/training_split/training_images/train-0001_nsd-00013.png ...
    subjXX/training_split/training_fmri/{lh,rh}_training_fmri.npy      (n_train, n_challenge_vertices)
    subjXX/test_split/test_images/test-0001_nsd-XXXXX.png ...           (optional)
    subjXX/test_split/test_fmri/{lh,rh}_test_fmri.npy                   (optional)
    subjXX/test_split/noise_ceiling/{lh,rh}_noise_ceiling.npy           (optional)
    subjXX/roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy           (length 163842, nonzero = challenge vertex)
    subjXX/roi_masks/{lh,rh}.<class>_fsaverage_space.npy                (int labels, length 163842)
    subjXX/roi_masks/mapping_<class>.npy                                (pickled dict label -> ROI name)

Row i of an fMRI array belongs to the i-th image in sorted file-name order; column j
to the j-th challenge vertex in ascending fsaverage index. Stimulus ids come from
:func:`pipeline.imagesets.folder.stable_image_id` (``train-0001_nsd-00013.png`` -> ``nsd-00013``).

Noise ceiling units: the Algonauts 2023 preparation computes the ceiling as the
fraction ``ncsnr^2 / (ncsnr^2 + 1/n)`` (0..1), while NSD's own noise-ceiling maps are
in percent (0..100). ``noise_ceiling_units="auto"`` (the default) reads values above 1
as percent and divides them by 100, and says so in the log and in ``Subject.source``;
``"fraction"`` or ``"percent"`` force the reading.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cache.errors import InvalidInputError, MissingInputError
from pipeline.imagesets.folder import list_image_files, stable_image_id
from pipeline.subjects.assemble import assemble_subject, finite_vertices, subject_label
from pipeline.subjects.files import check_numeric, check_surface_labels, load_label_mapping, load_npy
from pipeline.subjects.rois import describe_mask, roi_masks_from_labels, select_vertices
from stages.mesh import HEMISPHERES
from stages.subject import Subject

log = logging.getLogger(__name__)

NOISE_CEILING_UNITS = ("auto", "fraction", "percent")
#: Response rows copied at a time (bounds the temporary of a column selection to a few MB).
_ROWS_PER_COPY = 256
_SPLITS = {"train": ("training_split", "training_images", "training_fmri", "training"),
           "test": ("test_split", "test_images", "test_fmri", "test")}


def read_algonauts(root: Path, subject: int | str, *, split_seed: int = 0, val_fraction: float = 0.1,
                   test_fraction: float = 0.1, mask: Sequence[str] | None = None,
                   noise_ceiling_units: str = "auto", subjects_dir: Path | None = None,
                   reader: str = "algonauts") -> Subject:
    """Read ``<root>/subjNN`` (or ``root`` itself when it is a subject folder) into a :class:`Subject`.

    Args:
        root: folder holding ``subj01``, ``subj02``... (or one subject folder).
        subject: ``1`` -> ``subj01``; a folder name is used as given.
        split_seed, val_fraction, test_fraction: see :func:`pipeline.subjects.splits.make_splits`;
            the test split is the data's own when the test images have fMRI.
        mask: ``None`` keeps every challenge vertex; else ROI classes (``"prf-visualrois"``)
            and/or ROI names (``"FFA-1"``) whose union is kept.
        noise_ceiling_units: ``"auto"``, ``"fraction"`` or ``"percent"`` (see module docstring).
        subjects_dir: FreeSurfer subjects folder for meshes beyond fsaverage5.
        reader: the name recorded in ``Subject.source`` (``"synthetic"`` for generated subjects).

    Vertices with NaN/Inf responses are dropped (counted in the log).
    """
    if noise_ceiling_units not in NOISE_CEILING_UNITS:
        raise InvalidInputError(f"noise_ceiling_units must be one of {list(NOISE_CEILING_UNITS)}, "
                                f"got {noise_ceiling_units!r}")
    name = subject_label(subject)
    folder = _subject_folder(Path(root), name)
    challenge = _challenge_vertices(folder / "roi_masks")
    splits = {split: _read_split(folder, split, challenge) for split in _SPLITS}
    if splits["test"] is None:
        _note_unused_test_images(folder)
    present = [split for split in _SPLITS if splits[split] is not None]

    keep: dict[str, np.ndarray] = {}
    for hemi in HEMISPHERES:
        files = [f"{folder}/{_SPLITS[split][0]}/{_SPLITS[split][2]}/{hemi}_{_SPLITS[split][3]}_fmri.npy"
                 for split in present]
        keep[hemi] = finite_vertices([splits[split][1][hemi] for split in present], where=" and ".join(files))

    ceiling, ceiling_note = _read_noise_ceiling(folder / "test_split" / "noise_ceiling", challenge, keep,
                                                noise_ceiling_units)
    hemisphere = np.concatenate([np.full(int(keep[h].sum()), h) for h in HEMISPHERES])
    fsaverage_index = np.concatenate([challenge[h][keep[h]] for h in HEMISPHERES])
    labels, names, where = _read_roi_labels(folder / "roi_masks", {h: challenge[h][keep[h]] for h in HEMISPHERES})
    rois, classes = roi_masks_from_labels(labels, names, where=where)
    selected = select_vertices(mask, rois, classes, hemisphere.size)

    ids = np.concatenate([splits[split][0] for split in present])
    responses = _gather_responses([splits[split][1] for split in present], keep, selected[hemisphere == "lh"],
                                  selected[hemisphere == "rh"])
    n_train = splits["train"][0].size
    test_rows = np.arange(n_train, ids.size) if "test" in present else None
    return assemble_subject(
        name=name, stimulus_ids=ids, responses=responses, hemisphere=hemisphere[selected],
        fsaverage_index=fsaverage_index[selected], rois={k: v[selected] for k, v in rois.items()},
        noise_ceiling=None if ceiling is None else ceiling[selected], test_rows=test_rows,
        split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction,
        subjects_dir=subjects_dir,
        source={"reader": reader, "root": str(folder), "noise_ceiling": ceiling_note,
                "mask": describe_mask(mask, default="all challenge vertices")},
    )


def _subject_folder(root: Path, name: str) -> Path:
    if (root / name).is_dir():
        return root / name
    if (root / "training_split").is_dir():
        if root.name != name:
            raise InvalidInputError(f"{root} is itself the subject folder {root.name!r}, not {name!r}; pass subject "
                                    f"{root.name!r}, or the folder holding the subject folders as the root")
        return root
    available = sorted(p.name for p in root.glob("subj*") if p.is_dir()) if root.is_dir() else []
    raise MissingInputError(f"Algonauts subject folder {root / name} does not exist "
                            f"(subjects found in {root}: {available or 'none'}); "
                            "point the root at the folder holding subj01, subj02, ...")


def _challenge_vertices(roi_dir: Path) -> dict[str, np.ndarray]:
    """hemisphere -> int64 fsaverage indices of the challenge vertices, ascending."""
    challenge = {}
    for hemi in HEMISPHERES:
        path = roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy"
        labels = check_surface_labels(load_npy(path, "challenge-vertex mask"), path, "challenge-vertex mask")
        challenge[hemi] = np.flatnonzero(labels != 0).astype(np.int64)
        if challenge[hemi].size == 0:
            raise InvalidInputError(f"challenge-vertex mask {path} marks no vertex (all zeros)")
    return challenge


def _read_split(folder: Path, split: str, challenge: dict[str, np.ndarray]
                ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(stimulus ids, hemisphere -> responses of shape (n_images, n_challenge)) or None if a test split lacks fMRI."""
    split_dir, image_dir, fmri_dir, stem = _SPLITS[split]
    paths = {h: folder / split_dir / fmri_dir / f"{h}_{stem}_fmri.npy" for h in HEMISPHERES}
    if split == "test" and not any(path.is_file() for path in paths.values()):
        return None
    images = list_image_files(folder / split_dir / image_dir)
    ids = np.array([stable_image_id(path) for path in images], dtype=str)
    fmri = {}
    for hemi, path in paths.items():
        array = load_npy(path, f"{split} fMRI", mmap=True)
        check_numeric(array, path, f"{split} fMRI")
        if array.dtype.kind == "b" or array.ndim != 2:
            raise InvalidInputError(f"{split} fMRI {path} has shape {array.shape} and dtype {array.dtype}; "
                                    "expected a 2-D float array (n_images, n_vertices)")
        if array.shape[0] != ids.size:
            raise InvalidInputError(f"{split} fMRI {path} has {array.shape[0]} rows but "
                                    f"{folder / split_dir / image_dir} holds {ids.size} images; "
                                    "row i must belong to the i-th image in sorted file-name order")
        if array.shape[1] != challenge[hemi].size:
            raise InvalidInputError(f"{split} fMRI {path} has {array.shape[1]} vertex columns but "
                                    f"{folder}/roi_masks/{hemi}.all-vertices_fsaverage_space.npy marks "
                                    f"{challenge[hemi].size} challenge vertices; they must match")
        fmri[hemi] = array
    return ids, fmri


def _gather_responses(blocks: list[dict[str, np.ndarray]], keep: dict[str, np.ndarray], lh_selected: np.ndarray,
                      rh_selected: np.ndarray) -> np.ndarray:
    """float32 array of shape (n_rows, n_selected): the split blocks stacked, lh then rh columns.

    Filled into one preallocated array, so a full-size subject is held once, not three times.
    """
    columns = {"lh": np.flatnonzero(keep["lh"])[lh_selected], "rh": np.flatnonzero(keep["rh"])[rh_selected]}
    n_rows = sum(block["lh"].shape[0] for block in blocks)
    out = np.empty((n_rows, columns["lh"].size + columns["rh"].size), dtype=np.float32)
    targets = {"lh": slice(0, columns["lh"].size), "rh": slice(columns["lh"].size, out.shape[1])}
    row = 0
    for block in blocks:
        for hemi in HEMISPHERES:
            source = block[hemi]
            every_column = columns[hemi].size == source.shape[1]
            for start in range(0, source.shape[0], _ROWS_PER_COPY):
                stop = min(start + _ROWS_PER_COPY, source.shape[0])
                part = source[start:stop] if every_column else source[start:stop][:, columns[hemi]]
                out[row + start:row + stop, targets[hemi]] = part
        row += block["lh"].shape[0]
    return out


def _note_unused_test_images(folder: Path) -> None:
    test_images = folder / "test_split" / "test_images"
    if test_images.is_dir():
        log.info("%s: test images have no fMRI (test_split/test_fmri absent); they are not used, "
                 "and a seeded share of the training images is held out as the test split", folder)


def _read_noise_ceiling(nc_dir: Path, challenge: dict[str, np.ndarray], keep: dict[str, np.ndarray],
                        units: str) -> tuple[np.ndarray | None, str]:
    """Noise ceiling over the kept vertices (fraction 0..1) and a note on its source and units."""
    paths = {h: nc_dir / f"{h}_noise_ceiling.npy" for h in HEMISPHERES}
    if not any(path.is_file() for path in paths.values()):
        return None, "absent"
    parts = []
    for hemi, path in paths.items():
        array = load_npy(path, "noise ceiling")
        check_numeric(array, path, "noise ceiling")
        if array.shape != (challenge[hemi].size,):
            raise InvalidInputError(f"noise ceiling {path} has shape {array.shape}; expected "
                                    f"({challenge[hemi].size},), one value per challenge vertex")
        kept = array[keep[hemi]].astype(np.float64)
        if not np.isfinite(kept).all() or kept.min() < 0:
            raise InvalidInputError(f"noise ceiling {path} holds NaN/Inf or negative values at vertices with "
                                    "finite responses")
        parts.append(kept)
    ceiling = np.concatenate(parts)
    percent = units == "percent" or (units == "auto" and ceiling.max() > 1.0)
    if percent:
        ceiling = ceiling / 100.0
        log.info("%s: noise ceiling read as percent and divided by 100", nc_dir)
    if ceiling.max() > 1.0:
        raise InvalidInputError(f"noise ceiling in {nc_dir} read as {'percent' if percent else 'a fraction'} "
                                f"(noise_ceiling_units={units!r}) exceeds the whole variance (max "
                                f"{ceiling.max():.4g} as a fraction); expected 0..1 or 0..100 percent")
    return ceiling, f"{nc_dir} ({'percent, divided by 100' if percent else 'fraction'})"


def _read_roi_labels(roi_dir: Path, indices: dict[str, np.ndarray]
                     ) -> tuple[dict[str, np.ndarray], dict[str, dict[int, str]], dict[str, str]]:
    """Per ROI class present: labels at the given vertices (lh then rh), the label table, a file note."""
    classes = sorted(path.name[len("lh."):-len("_fsaverage_space.npy")]
                     for path in roi_dir.glob("lh.*_fsaverage_space.npy"))
    labels, names, where = {}, {}, {}
    for roi_class in classes:
        if roi_class == "all-vertices":
            continue
        per_hemi = []
        for hemi in HEMISPHERES:
            path = roi_dir / f"{hemi}.{roi_class}_fsaverage_space.npy"
            array = check_surface_labels(load_npy(path, f"ROI labels of class {roi_class}"), path,
                                         f"ROI labels of class {roi_class}")
            per_hemi.append(array[indices[hemi]])
        labels[roi_class] = np.concatenate(per_hemi)
        names[roi_class] = load_label_mapping(roi_dir / f"mapping_{roi_class}.npy")
        where[roi_class] = f"{roi_dir}/{{lh,rh}}.{roi_class}_fsaverage_space.npy with mapping_{roi_class}.npy"
    return labels, names, where
