"""The Python API for notebooks: a finished fit as an in-silico brain, and any bddn store as xarray.

    from pipeline.api import load_fit, open_store

    fit = load_fit("runs/fits/mobilenet_v2/subj01")
    fit.maps                                   # pandas DataFrame, one row per vertex (the fit's vertices.parquet)
    responses = fit.predict("my_images/")      # xarray.DataArray (image, vertex), the fit's response units
    responses.sel(vertex=responses.roi == "V1v").mean("vertex")
    open_store("runs/features/demo/mobilenet_v2.zarr")   # a feature store as an xarray.Dataset

``bddn predict`` and ``bddn preferred`` are thin wrappers over these functions, so the command line and a
notebook give the same numbers. Images go through the normal store path (``pipeline.insilico``) and
the fit's own read-out (``stages.fit.predictor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.errors import InvalidInputError
from cache.provenance import environment_record
from cache.store import FeatureStore
from pipeline import runroot
from pipeline.config import build_config
from pipeline.insilico import Images, check_image_store, extraction_recipe, features_for_images
from pipeline.predictions import (
    as_data_array, chunk_images, is_predictions, open_predictions, vertex_coordinates, write_predictions,
)
from stages.fit.config import FitConfig
from stages.fit.predictor import BLOCK_BYTES, Predictor, block_images_for, load_predictor
from stages.fit.result import FitResult
from stages.fit.ridge import METHODS as RIDGE_METHODS, RidgeConfig

#: Fit methods whose folder holds a read-out that can predict new images.
PREDICTING_METHODS = ("factortopy", "factortopy-joint", *RIDGE_METHODS)


@dataclass
class LoadedFit:
    """A finished fit folder, loaded.

    Attributes:
        path: the fit folder.
        result: its per-vertex table, config, metrics and provenance.
        run_root: where image sets and their feature stores go (the folder above ``fits/`` when the fit lies
            in a run root, else ``$BDDN_RUN_ROOT`` or ``./runs``).
    """

    path: Path
    result: FitResult
    run_root: Path
    _predictors: dict[str | None, Predictor] = field(default_factory=dict, repr=False)

    @property
    def maps(self) -> Any:
        """The per-vertex table (selections, scores, training mean/sd) as a pandas DataFrame."""
        import pandas

        return pandas.DataFrame({name: np.asarray(values) for name, values in self.result.vertices.items()})

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config the fit was trained with."""
        return self.result.config

    @property
    def provenance(self) -> dict[str, Any]:
        """What produced the fit: its feature store (path and provenance), subject, seed and environment."""
        return self.result.provenance

    @property
    def store_provenance(self) -> dict[str, Any]:
        """The provenance of the feature store the fit was fitted from (model, preprocessing, stage-one config)."""
        return (self.provenance.get("store") or {}).get("provenance") or {}

    def predictor(self, *, device: str | None = None) -> Predictor:
        """The fit's read-out (``stages.fit.predictor``), rebuilt on ``device`` (default: the fit's setting,
        ``auto`` = CUDA when there is one); loaded once per device.

        Raises:
            InvalidInputError: not a fit that predicts (a planted truth), or damaged weights or coefficients.
            MissingInputError: the weights or coefficient file is missing.
        """
        if device not in self._predictors:
            if self.result.method not in PREDICTING_METHODS:
                raise InvalidInputError(f"{self.path} is a {self.result.method} result, not a fit with a read-out: "
                                        f"only {', '.join(PREDICTING_METHODS)} fits predict new images")
            kind = RidgeConfig if self.result.method in RIDGE_METHODS else FitConfig
            cfg = build_config(kind, self.config, {"device": device} if device else None,
                               where=f"{self.path}/fit.json config")
            self._predictors[device] = load_predictor(self.path, self.result, cfg)
        return self._predictors[device]

    def image_store(self, images: Images | None = None, *, store: str | Path | None = None, name: str | None = None,
                    device: str | None = None, progress: bool = False) -> tuple[FeatureStore, np.ndarray]:
        """(feature store, image ids) for ``images`` extracted with the fit's recipe, or for every image of an
        existing ``store``; either way checked to serve this fit (:func:`pipeline.insilico.check_image_store`)."""
        if (images is None) == (store is None):
            raise InvalidInputError("give the images to predict, or a feature store of them, not both")
        if store is not None:
            opened = FeatureStore.open(store)
            ids = np.asarray(opened.image_ids)
        else:
            request, cfg = extraction_recipe(self.store_provenance, device=device)
            opened, ids = features_for_images(images, request, cfg, run_root=self.run_root, name=name,
                                              progress=progress)
        check_image_store(opened, self.store_provenance, fit=str(self.path))
        return opened, ids

    def predict(self, images: Images | None = None, *, store: str | Path | None = None, out: str | Path | None = None,
                name: str | None = None, device: str | None = None, block_bytes: int = BLOCK_BYTES,
                progress: bool = False) -> Any:
        """Predicted responses of every fitted vertex to ``images`` (a folder, files, image lists, PIL images or
        uint8 arrays) or to every image of a feature ``store``.

        Args:
            out: write a chunked Zarr group there (``pipeline.predictions``) and return it opened lazily;
                None: return the predictions in memory.
            name: the image set's name (its store is ``<run root>/features/<name>/<model>.zarr``).
            device: where extraction and the read-out run (default: CUDA when there is one).
            block_bytes: host memory for one block of predictions; images x vertices is never held beyond it
                when writing to ``out``.

        Returns:
            an ``xarray.DataArray`` of float32, dimensions (image, vertex), in the fit's response units, with
            ``image_id``, ``vertex``, ``fsaverage_index``, ``hemisphere`` and ``roi`` coordinates and the
            provenance in ``.attrs``.
        """
        opened, ids = self.image_store(images, store=store, name=name, device=device, progress=progress)
        return self.predict_store(opened, ids, out=out, device=device, block_bytes=block_bytes)

    def predict_store(self, store: FeatureStore, image_ids: np.ndarray, *, out: str | Path | None = None,
                      device: str | None = None, block_bytes: int = BLOCK_BYTES) -> Any:
        """:meth:`predict` for ``image_ids`` of a store that :meth:`image_store` gave (same arguments and return)."""
        predictor = self.predictor(device=device)
        ids = np.asarray(image_ids)
        coordinates = vertex_coordinates(self.result.vertices)
        record = self.prediction_record(store, predictor)
        rows = chunk_images(predictor.n_vertices)
        block = max(rows, block_images_for(predictor.n_vertices, budget_bytes=block_bytes) // rows * rows)
        blocks = predictor.predict_blocks(store, ids, block_images=block)
        if out is not None:
            return open_predictions(write_predictions(Path(out), blocks, image_ids=ids, coordinates=coordinates,
                                                      record=record))
        values = np.empty((len(ids), predictor.n_vertices), dtype=np.float32)
        for start, part in blocks:
            values[start:start + len(part)] = part
        return as_data_array(values, image_ids=ids, coordinates=coordinates, record=record)

    def prediction_record(self, store: FeatureStore, predictor: Predictor) -> dict[str, Any]:
        """The provenance written with predictions: units, the fit, the images' store and the environment."""
        return {"units": predictor.units,
                "fit": {"path": str(self.path), "method": self.result.method, "subject": self.result.subject,
                        "model": self.result.model, "layer_names": list(self.result.layer_names)},
                "store": {"path": str(store.path), "provenance": store.provenance,
                          "image_ids_sha256": store.identity()["image_ids_sha256"]},
                "device": str(predictor.device), "precision": predictor.precision,
                "environment": environment_record()}


def load_fit(path: str | Path, *, run_root: str | Path | None = None) -> LoadedFit:
    """Load the fit folder ``path`` (any method; FactorTopy, ridge and banded-ridge fits predict).

    ``run_root``: where new images' stores go; default the run root holding the fit (the folder above its
    ``fits/``), else ``$BDDN_RUN_ROOT`` or ``./runs``.

    Raises:
        MissingInputError, InvalidInputError: not a finished fit folder, or a damaged one.
    """
    folder = Path(path).expanduser().resolve()
    result = FitResult.load(folder)
    if run_root is None:
        above = next((parent.parent for parent in folder.parents if parent.name == "fits"), None)
        run_root = above if above is not None else runroot.resolve_run_root(None)
    return LoadedFit(path=folder, result=result, run_root=Path(run_root).expanduser().resolve())


def open_store(path: str | Path) -> Any:
    """A bddn Zarr store as xarray: a predictions group as its ``DataArray`` (:func:`pipeline.predictions.
    open_predictions`), a feature store as an ``xarray.Dataset`` of its per-layer arrays (lazy, dask-backed),
    with ``image_id`` as a coordinate and its provenance in ``.attrs``.

    Raises:
        MissingInputError: ``path`` is not a finished feature store or predictions group.
    """
    import xarray

    path = Path(path).expanduser().resolve()
    if is_predictions(path):
        return open_predictions(path)
    store = FeatureStore.open(path)
    dataset = xarray.open_zarr(store.path, consolidated=False)
    dataset.attrs = {"provenance": store.provenance}
    return dataset
