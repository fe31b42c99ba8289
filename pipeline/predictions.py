"""Predicted responses on disk: one chunked Zarr v3 group per fit and image set, readable by xarray.

Layout of ``<run root>/predictions/<fit folder below fits/>/<imageset>.zarr`` (or ``--out``):

==================  ==================  ==============================================================
array               dimensions          content
==================  ==================  ==============================================================
``prediction``      (image, vertex)     float32 responses in the fit's response units, chunked by
                                        images (about 8 MiB per chunk, every vertex in a chunk)
``image_id``        (image,)            the stable id of each image
``vertex``          (vertex,)           the fit's vertex number (row of its ``vertices.parquet``)
``fsaverage_index`` (vertex,)           the vertex on its fsaverage hemisphere
``hemisphere``      (vertex,)           ``lh`` / ``rh``
``roi``             (vertex,)           the vertex's ROI (``""`` for none)
==================  ==================  ==============================================================

The group's ``bddn_predictions`` attribute records the units, the fit (folder, method, subject,
model), the feature store (path and identity) and the environment. The group is written as
``<name>.partial`` and renamed into place when every block is in, so a present group is complete;
an older group at the same place is replaced only then.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from cache.errors import MissingInputError

PREDICTIONS_KEY = "bddn_predictions"
PREDICTION_ARRAY = "prediction"
#: Per-vertex coordinates written beside the predictions (columns of the fit's per-vertex table).
VERTEX_COORDINATES = ("vertex", "fsaverage_index", "hemisphere", "roi")
#: Target size of one chunk of the prediction array (bytes).
CHUNK_BYTES = 8 * 2**20


def chunk_images(n_vertices: int) -> int:
    """Images per chunk of the prediction array (every vertex in one chunk, about :data:`CHUNK_BYTES`)."""
    return max(1, CHUNK_BYTES // (4 * max(1, n_vertices)))


def vertex_coordinates(vertices: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The :data:`VERTEX_COORDINATES` columns of a fit's per-vertex table, typed for the store."""
    return {"vertex": np.asarray(vertices["vertex"], dtype=np.int64),
            "fsaverage_index": np.asarray(vertices["fsaverage_index"], dtype=np.int64),
            "hemisphere": np.asarray(vertices["hemisphere"]).astype(str),
            "roi": np.asarray(vertices["roi"]).astype(str)}


def write_predictions(path: Path, blocks: Iterable[tuple[int, np.ndarray]], *, image_ids: np.ndarray,
                      coordinates: Mapping[str, np.ndarray], record: Mapping[str, Any]) -> Path:
    """Write the blocks ``(start, array of shape (n_block, n_vertices))`` covering ``image_ids`` as a predictions group
    at ``path`` (see module docs); ``record`` becomes its ``bddn_predictions`` attribute. Returns ``path``."""
    path = Path(path)
    n_images, n_vertices = len(image_ids), len(coordinates["vertex"])
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(partial, mode="w")
    rows = min(chunk_images(n_vertices), max(1, n_images))
    values = group.create_array(PREDICTION_ARRAY, shape=(n_images, n_vertices), chunks=(rows, n_vertices),
                                dtype="float32", fill_value=np.nan, dimension_names=("image", "vertex"),
                                attributes={"coordinates": " ".join(("image_id", *VERTEX_COORDINATES[1:])),
                                            "units": record.get("units", "")})
    group.create_array("image_id", shape=(n_images,), chunks=(max(1, n_images),), dtype=str,
                       dimension_names=("image",))[:] = np.asarray(image_ids).astype(str)
    for name in VERTEX_COORDINATES:
        column = np.asarray(coordinates[name])
        group.create_array(name, shape=(n_vertices,), chunks=(max(1, n_vertices),),
                           dtype=str if column.dtype.kind in "US" else column.dtype,
                           dimension_names=("vertex",))[:] = column
    try:
        for start, block in blocks:
            values[start:start + len(block)] = block
    except BaseException:   # a failed or interrupted run leaves nothing that looks like predictions
        shutil.rmtree(partial, ignore_errors=True)
        raise
    group.attrs[PREDICTIONS_KEY] = {**record, "n_images": n_images, "n_vertices": n_vertices, "complete": True}
    retired = path.with_name(path.name + ".old")
    if path.exists():
        os.replace(path, retired)
    os.replace(partial, path)
    shutil.rmtree(retired, ignore_errors=True)
    return path


def is_predictions(path: Path) -> bool:
    """Whether ``path`` holds a finished predictions group."""
    try:
        record = zarr.open_group(Path(path), mode="r").attrs.get(PREDICTIONS_KEY)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return False
    return isinstance(record, dict) and bool(record.get("complete"))


def open_predictions(path: Path) -> Any:
    """The predictions group at ``path`` as a lazy ``xarray.DataArray`` (image, vertex) with its coordinates and
    its record in ``.attrs``.

    Raises:
        MissingInputError: ``path`` holds no finished predictions group.
    """
    import xarray

    path = Path(path)
    if not is_predictions(path):
        raise MissingInputError(f"{path} holds no finished predictions; write them with `bddn predict`")
    record = zarr.open_group(path, mode="r").attrs[PREDICTIONS_KEY]
    dataset = xarray.open_zarr(path, consolidated=False)
    array = dataset[PREDICTION_ARRAY]
    array.attrs = {**array.attrs, **record}
    return array


def as_data_array(values: np.ndarray, *, image_ids: np.ndarray, coordinates: Mapping[str, np.ndarray],
                  record: Mapping[str, Any]) -> Any:
    """In-memory predictions, array of shape (n_images, n_vertices), as the ``xarray.DataArray`` that
    :func:`open_predictions` gives for the same numbers written to disk."""
    import xarray

    coords = {"image_id": ("image", np.asarray(image_ids).astype(str)), "vertex": ("vertex", coordinates["vertex"])}
    coords.update({name: ("vertex", coordinates[name]) for name in VERTEX_COORDINATES[1:]})
    return xarray.DataArray(np.asarray(values, dtype=np.float32), dims=("image", "vertex"), coords=coords,
                            name=PREDICTION_ARRAY, attrs={"units": record.get("units", ""), **record})
