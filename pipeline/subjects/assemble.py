"""The steps every subject reader ends with: name the subject, drop unusable vertices,
place vertices on the sphere, draw the splits, build the :class:`Subject`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cache.errors import InvalidInputError
from pipeline.subjects.splits import make_splits
from pipeline.surfaces import mesh_for_indices, sphere_coordinates
from stages.subject import Subject

log = logging.getLogger(__name__)


def subject_label(subject: int | str) -> str:
    """``1``, ``"1"``, ``"01"`` or ``"subj01"`` -> ``"subj01"``; any other name is kept as given."""
    text = str(subject).strip()
    if isinstance(subject, bool) or not text:
        raise InvalidInputError(f"subject must be a number (1 -> subj01) or a folder name, got {subject!r}")
    digits = text.removeprefix("subj")
    if digits.isdigit():
        if int(digits) < 1:
            raise InvalidInputError(f"subject numbers start at 1, got {subject!r}")
        return f"subj{int(digits):02d}"
    return text


def finite_vertices(arrays: list[np.ndarray], *, where: str, block: int = 4096) -> np.ndarray:
    """Bool array of shape (n_vertices,): the columns with no NaN/Inf in any of ``arrays``.

    Each array has shape (n_rows_i, n_vertices) (e.g. the train and test responses of one
    hemisphere). Dropped columns are counted in the log; no column left is an
    InvalidInputError naming ``where``. Works column block by column block, so
    memory-mapped arrays are never read whole.
    """
    n_vertices = arrays[0].shape[1]
    keep = np.ones(n_vertices, dtype=bool)
    empty_rows = []   # per array, the rows with no finite value at all
    for array in arrays:
        row_has_value = np.zeros(array.shape[0], dtype=bool)
        for start in range(0, n_vertices, block):
            finite = np.isfinite(array[:, start:start + block])
            keep[start:start + block] &= finite.all(axis=0)
            row_has_value |= finite.any(axis=1)
        empty_rows.append(np.flatnonzero(~row_has_value))
    n_dropped = int((~keep).sum())
    if n_dropped == n_vertices:
        rows = [(index, bad) for index, bad in enumerate(empty_rows) if 0 < bad.size < arrays[index].shape[0]]
        if rows:
            described = "; ".join(f"array {index}: {bad.size} row(s), first {bad[:5].tolist()}" for index, bad in rows)
            raise InvalidInputError(f"{where}: whole image rows are NaN/Inf ({described}), which leaves no vertex "
                                    "with finite responses; remove those rows (and their images) or fill them")
        raise InvalidInputError(f"{where}: every one of the {n_vertices} vertices has NaN/Inf responses "
                                "(an all-NaN vertex set); no usable vertex is left")
    if n_dropped:
        log.warning("%s: dropped %d of %d vertices with NaN/Inf responses", where, n_dropped, n_vertices)
    return keep


def assemble_subject(*, name: str, stimulus_ids: np.ndarray, responses: np.ndarray, hemisphere: np.ndarray,
                     fsaverage_index: np.ndarray, rois: dict[str, np.ndarray], noise_ceiling: np.ndarray | None,
                     test_rows: np.ndarray | None, split_seed: int, val_fraction: float, test_fraction: float,
                     subjects_dir: Path | None, source: dict[str, str]) -> Subject:
    """A validated :class:`Subject` with sphere coordinates, mesh name and seeded splits filled in.

    Args:
        responses: array of shape (n_images, n_vertices), finite (cast to float32 here).
        hemisphere, fsaverage_index: arrays of shape (n_vertices,).
        test_rows: the data's own test rows, or None for a seeded ``test_fraction``.
    """
    fsaverage_index = np.asarray(fsaverage_index, dtype=np.int64)
    hemisphere = np.asarray(hemisphere).astype("<U2")
    coords = sphere_coordinates(hemisphere, fsaverage_index, subjects_dir=subjects_dir)
    splits = make_splits(responses.shape[0], seed=split_seed, val_fraction=val_fraction,
                         test_fraction=test_fraction, test_rows=test_rows)
    source = dict(source, test_split="data's own" if test_rows is not None else f"seeded fraction {test_fraction}")
    return Subject(
        name=name,
        stimulus_ids=np.asarray(stimulus_ids).astype(str),
        responses=np.ascontiguousarray(responses, dtype=np.float32),
        hemisphere=hemisphere,
        fsaverage_index=fsaverage_index,
        sphere_coords=np.asarray(coords, dtype=np.float32),
        rois=rois,
        splits=splits,
        split_seed=int(split_seed),
        noise_ceiling=None if noise_ceiling is None else np.asarray(noise_ceiling, dtype=np.float32),
        mesh=mesh_for_indices(fsaverage_index),
        source=source,
    )
