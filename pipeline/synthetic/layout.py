"""Write a subject in the Algonauts 2023 folder layout, and the planted truth beside it.

Layout (``../shared/docs/data-formats.md``; read back by ``pipeline.subjects.algonauts``)::

    subjNN/training_split/training_images/train-0001_demo-00000.png   (hard links, else copies)
    subjNN/training_split/training_fmri/{lh,rh}_training_fmri.npy     float32 (n_train, n_hemisphere_vertices)
    subjNN/test_split/test_images/test-0001_demo-00017.png
    subjNN/test_split/test_fmri/{lh,rh}_test_fmri.npy                 float32 (n_test, n_hemisphere_vertices)
    subjNN/test_split/noise_ceiling/{lh,rh}_noise_ceiling.npy         float32 fraction 0..1
    subjNN/roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy         int32, length 163842, 1 = subject vertex
    subjNN/roi_masks/{lh,rh}.<class>_fsaverage_space.npy              int32 labels, length 163842
    subjNN/roi_masks/{lh,rh}.<class>_challenge_space.npy              int32 labels, one per subject vertex
    subjNN/roi_masks/mapping_<class>.npy                              dict label -> name (np.save, pickled)
    subjNN/planted_truth.parquet                                      one row per vertex (FitResult columns)
    subjNN/planted_truth.json                                         how it was made

Image copies keep the source file's stem after the ``train-0001_`` prefix, so their
stable ids (``demo-00042``, or the content hash) equal the feature store's. Columns
follow the vertices of each hemisphere in ascending fsaverage index; rows follow the
images in file-name order. A subject is written into a hidden staging folder and
renamed into place when complete, so a half-written subject never looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cache.errors import InvalidInputError, MissingInputError
from cache.jsondata import json_default
from stages.fit.result import FitResult, read_vertex_folder
from stages.mesh import FSAVERAGE7_VERTICES, HEMISPHERES

TRUTH_TABLE = "planted_truth.parquet"
TRUTH_JSON = "planted_truth.json"
#: split -> (split folder, image folder, fMRI folder, fMRI file stem, image name prefix)
_SPLITS = {"train": ("training_split", "training_images", "training_fmri", "training", "train"),
           "test": ("test_split", "test_images", "test_fmri", "test", "test")}


def write_algonauts_subject(folder: Path, *, images: Mapping[str, Sequence[Path]],
                            responses: Mapping[str, np.ndarray], hemisphere: np.ndarray,
                            fsaverage_index: np.ndarray, roi_labels: Mapping[str, np.ndarray],
                            roi_names: Mapping[str, Mapping[int, str]], noise_ceiling: np.ndarray) -> None:
    """Fill ``folder`` (new or empty) with one subject in the Algonauts 2023 layout.

    Args:
        images: ``"train"`` / ``"test"`` -> image files in row order.
        responses: ``"train"`` / ``"test"`` -> float array of shape (n_split_images, n_vertices).
        hemisphere: array of shape (n_vertices,) of ``"lh"`` / ``"rh"``.
        fsaverage_index: int array of shape (n_vertices,), ascending within each hemisphere.
        roi_labels: ROI class -> int array of shape (n_vertices,), 0 = outside.
        roi_names: ROI class -> {label: name}, written as ``mapping_<class>.npy``.
        noise_ceiling: array of shape (n_vertices,), fraction 0..1.
    """
    hemisphere = np.asarray(hemisphere).astype(str)
    index = np.asarray(fsaverage_index, dtype=np.int64)
    for side in HEMISPHERES:
        part = index[hemisphere == side]
        if part.size == 0 or np.any(np.diff(part) <= 0) or part.max() >= FSAVERAGE7_VERTICES:
            raise InvalidInputError(f"{side} vertices must be present, unique, ascending and < {FSAVERAGE7_VERTICES}")
    for split, (split_dir, image_dir, fmri_dir, stem, prefix) in _SPLITS.items():
        if len(images[split]) != responses[split].shape[0]:
            raise InvalidInputError(f"{split}: {len(images[split])} images but {responses[split].shape[0]} response rows")
        target = folder / split_dir / image_dir
        target.mkdir(parents=True)
        width = max(4, len(str(len(images[split]))))
        for row, source in enumerate(images[split], start=1):
            _link_or_copy(Path(source), target / f"{prefix}-{row:0{width}d}_{Path(source).name}")
        (folder / split_dir / fmri_dir).mkdir(parents=True)
        for side in HEMISPHERES:
            columns = np.asarray(responses[split], dtype=np.float32)[:, hemisphere == side]
            np.save(folder / split_dir / fmri_dir / f"{side}_{stem}_fmri.npy", columns)

    (folder / "test_split" / "noise_ceiling").mkdir(parents=True)
    roi_dir = folder / "roi_masks"
    roi_dir.mkdir(parents=True)
    for side in HEMISPHERES:
        rows = hemisphere == side
        np.save(folder / "test_split" / "noise_ceiling" / f"{side}_noise_ceiling.npy",
                np.asarray(noise_ceiling, dtype=np.float32)[rows])
        np.save(roi_dir / f"{side}.all-vertices_fsaverage_space.npy", _on_fsaverage(index[rows], np.ones(rows.sum())))
        for roi_class, labels in roi_labels.items():
            labels = np.asarray(labels, dtype=np.int32)[rows]
            np.save(roi_dir / f"{side}.{roi_class}_fsaverage_space.npy", _on_fsaverage(index[rows], labels))
            np.save(roi_dir / f"{side}.{roi_class}_challenge_space.npy", labels)
    for roi_class in roi_labels:
        mapping = {int(label): str(name) for label, name in roi_names[roi_class].items()}
        np.save(roi_dir / f"mapping_{roi_class}.npy", np.array(mapping, dtype=object), allow_pickle=True)


def write_planted_truth(folder: Path, truth: FitResult, record: Mapping[str, Any]) -> None:
    """Write ``planted_truth.parquet`` (the per-vertex columns) and ``planted_truth.json`` (``record``)."""
    table = pa.table({name: np.asarray(values) for name, values in truth.vertices.items()})
    pq.write_table(table, folder / TRUTH_TABLE)
    header = {"method": truth.method, "subject": truth.subject, "model": truth.model,
              "layer_names": list(truth.layer_names), **record}
    (folder / TRUTH_JSON).write_text(json.dumps(header, indent=2, default=json_default))


def load_planted_truth(folder: str | Path) -> FitResult:
    """The planted truth of a synthetic subject folder as a :class:`FitResult` (method ``"truth"``)."""
    header, vertices = read_vertex_folder(Path(folder), TRUTH_JSON, TRUTH_TABLE,
                                          "is not a synthetic subject (make one with `bddn synth`)")
    return FitResult(method=header["method"], subject=header["subject"], model=header["model"],
                     layer_names=tuple(header["layer_names"]), vertices=vertices,
                     config=header.get("config", {}), provenance=header)


def read_truth_record(folder: Path) -> dict[str, Any] | None:
    """The ``planted_truth.json`` of ``folder`` as a dict, or None when absent or unreadable."""
    try:
        return json.loads((folder / TRUTH_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def staging_folder(target: Path) -> Path:
    """A fresh hidden folder beside ``target`` to build it in (readers skip hidden names)."""
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def publish_folder(staging: Path, target: Path, *, overwrite: bool) -> None:
    """Move a finished ``staging`` folder to ``target``; an existing target is replaced only with ``overwrite``."""
    if target.exists():
        if not overwrite:
            raise InvalidInputError(f"{target} already exists; pass --overwrite to replace it")
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired)
    else:
        staging.rename(target)


def _on_fsaverage(index: np.ndarray, values: np.ndarray) -> np.ndarray:
    full = np.zeros(FSAVERAGE7_VERTICES, dtype=np.int32)
    full[index] = values
    return full


def _link_or_copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise MissingInputError(f"image {source} does not exist")
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
