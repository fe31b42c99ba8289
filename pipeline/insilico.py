"""The features of new images for a finished fit, through the normal store path (``bddn predict``, the API).

A fit records the provenance of the store it was fitted from: the model id and weights, the
preprocessing, the token resizing, the autocast, the seed of random-init weights and stage one's
config. :func:`extraction_recipe` turns that record back into the :class:`ModelRequest` and
:class:`ExtractConfig` that made the store, so new images are extracted exactly alike (same
preprocessing, same compared provenance keys) into ``<run root>/features/<imageset>/<model>.zarr``
by :func:`pipeline.stores.update_feature_store`, the code behind ``bddn features``: a store that
already holds them is reused, a damaged one repaired. A store given directly
(:func:`check_image_store`) is refused in one line when its model id or any other
features-defining record differs from the fit's, or when a chunk is damaged or unfinished.

Images may be a folder, files, an image list, or pixels (PIL images, uint8 arrays); pixels are
written once as PNG files (lossless) named by content under ``<run root>/imagesets/pixels-<digest>/``,
so they take the same path as files and a repeated call reuses their store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from cache.errors import IncompleteStoreError, InvalidInputError, StoreMismatchError
from cache.integrity import damaged_chunks
from cache.lock import hold_lock
from cache.store import FeatureStore
from pipeline import runroot
from pipeline.config import build_config
from pipeline.imagesets.folder import refuse_different_images, stable_image_id
from pipeline.imagesets.union import ImageFiles, gather_images
from pipeline.stores import update_feature_store
from stages.device import parse_precision
from stages.features.extract import ExtractConfig
from stages.fit.inputs import store_model_id
from stages.models.preprocess import reference_preprocessing
from stages.models.registry import ModelRequest

#: What ``images`` may be: a folder or image file, several of them, PIL images, or uint8 pixel arrays.
Images = Union[str, Path, Image.Image, np.ndarray, Sequence[Union[str, Path, Image.Image, np.ndarray]]]
#: Provenance entries that define a store's features, besides its images (``cache.store`` compares these).
FEATURE_KEYS = ("model", "decoding", "tokens", "compute", "seed")


def extraction_recipe(provenance: dict[str, Any], *, device: str | None = None) -> tuple[ModelRequest, ExtractConfig]:
    """The model request and stage-one config that made a store with ``provenance`` (a fit's ``store.provenance``).

    ``device`` overrides where extraction runs (it is not part of the compared provenance); the precision is
    pinned to the recorded autocast, so a GPU extracts like the CPU that made the fit's store.

    Raises:
        InvalidInputError: the provenance records no model id or no stage-one config (a store made outside
            ``bddn features``): extract the images yourself and pass the store.
    """
    model = provenance.get("model") if isinstance(provenance.get("model"), dict) else {}
    config = (provenance.get("run") or {}).get("config")
    if not model.get("model_id") or not isinstance(config, dict):
        raise InvalidInputError("the fit's feature store records no model id or stage-one config (it was not made by "
                                "`bddn features`); extract the images with the fit's model yourself and pass that "
                                "store (--store)")
    preprocessing = model.get("preprocessing") or {}
    size = (preprocessing.get("size") or [224])[0]
    reference = _as_record(dataclasses.asdict(reference_preprocessing(size))) == _as_record(preprocessing)
    seed = provenance.get("seed")
    request = ModelRequest(name=model["model_id"], pretrained=seed is None, reference_preprocessing=reference,
                           seed=int(seed or 0))
    autocast = (provenance.get("compute") or {}).get("autocast", "off")
    overrides = {"precision": parse_precision(autocast), **({"device": device} if device else {})}
    return request, build_config(ExtractConfig, config, overrides, where="the fit's stage-one config")


def image_files(images: Images, *, run_root: Path) -> tuple[ImageFiles, str]:
    """(files, image-set name) of ``images``: one folder is named after itself, image lists (``.txt``) and files
    after their content; PIL images and uint8 arrays (H x W x 3, or N x H x W x 3) are written as PNG files first.

    Raises:
        InvalidInputError: an empty collection, a pixel array that is not uint8 RGB, or two files sharing an id.
    """
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        items = list(images)
    if not items:
        raise InvalidInputError("no images given: pass a folder, image files, PIL images or a uint8 array")
    if all(isinstance(item, (Image.Image, np.ndarray)) for item in items):
        return gather_images([_write_pixels(items, run_root)]), _pixel_set_name(items)
    if any(isinstance(item, (Image.Image, np.ndarray)) for item in items):
        raise InvalidInputError("pass either files and folders or pixels (PIL images, arrays), not both in one call")
    paths = [Path(item).expanduser().resolve() for item in items]
    folders = [path for path in paths if path.is_dir()]
    lists = [path for path in paths if path.suffix.lower() == ".txt"]
    files = [path for path in paths if path not in folders and path not in lists]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise InvalidInputError(f"image file {missing[0]} does not exist" + (f" ({len(missing) - 1} more)"
                                                                             if len(missing) > 1 else ""))
    gathered = gather_images(folders, lists) if folders or lists else ImageFiles((), (), ())
    kept = dict(zip(gathered.image_ids, gathered.paths))
    repeats = []
    for path in files:
        image_id = stable_image_id(path)
        if image_id in kept:
            repeats.append((image_id, kept[image_id], path))
        else:
            kept[image_id] = path
    refuse_different_images(repeats)
    merged = ImageFiles(image_ids=tuple(kept), paths=tuple(kept.values()),
                        sources=gathered.sources + tuple(str(path) for path in files))
    if len(folders) == 1 and not files and not lists:
        return merged, folders[0].name
    return merged, "files-" + hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()[:12]


def features_for_images(images: Images, request: ModelRequest, cfg: ExtractConfig, *, run_root: Path,
                        name: str | None = None, progress: bool = False) -> tuple[FeatureStore, np.ndarray]:
    """(store, image ids): the store of ``images`` under ``request`` and ``cfg`` (see :func:`extraction_recipe`), built
    or brought up to date by :func:`pipeline.stores.update_feature_store` while holding its lock, and the ids of
    ``images`` in it; the store's name is ``name`` or the image set's own (:func:`image_files`)."""
    files, default = image_files(images, run_root=run_root)
    imageset = name or default
    path = runroot.feature_store_path(run_root, imageset, request.name)
    with hold_lock(path):
        update_feature_store(path, files, request, cfg, imageset=imageset, progress=progress)
    return FeatureStore.open(path), np.asarray(files.image_ids)


def check_image_store(store: FeatureStore, fit_store_provenance: dict[str, Any], *, fit: str) -> None:
    """Refuse a store that cannot serve the fit ``fit`` (a folder, for messages): another model id, any other
    features-defining provenance entry that differs from the fit's store, an unfinished or a damaged chunk.

    Raises:
        StoreMismatchError: the model id or another entry of :data:`FEATURE_KEYS` differs.
        IncompleteStoreError: chunks are unfinished, or a chunk file is missing or of the wrong size.
    """
    theirs, ours = store_model_id(store), str((fit_store_provenance.get("model") or {}).get("model_id", ""))
    if theirs != ours:
        raise StoreMismatchError(f"feature store {store.path} holds features of model {theirs!r}; the fit {fit} was "
                                 f"fitted on {ours!r}: extract the images with --model {ours} (or pass --images and "
                                 "let bddn predict extract them)")
    differing = [key for key in FEATURE_KEYS if _as_record(store.provenance.get(key)) !=
                 _as_record(fit_store_provenance.get(key))]
    if differing:
        raise StoreMismatchError(f"feature store {store.path} was made differently from the fit's store "
                                 f"({', '.join(differing)} differ): its features are not the ones {fit} reads; "
                                 "pass --images to extract them with the fit's recipe")
    pending = store.pending_chunks()
    if pending:
        raise IncompleteStoreError(f"feature store {store.path} has {len(pending)} unfinished chunk(s) (first "
                                   f"{pending[0]}); finish it with `bddn features` before predicting")
    damaged = damaged_chunks(store)
    if damaged:
        chunk, problem = next(iter(damaged.items()))
        raise IncompleteStoreError(f"feature store {store.path} is damaged: chunk {chunk}, {problem}; rerun "
                                   "`bddn features` on its images to extract it again, then predict")


def _as_record(value: Any) -> Any:
    """A JSON-like value with tuples as lists, for comparing a live record with one read back from JSON."""
    if isinstance(value, dict):
        return {key: _as_record(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_record(item) for item in value]
    return value


def _pixels(item: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 RGB array of shape (height, width, 3) of one in-memory image."""
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"))
    array = np.asarray(item)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InvalidInputError(f"a pixel array must be uint8 of shape (height, width, 3) or (n, height, width, 3); "
                                f"got {array.dtype} {array.shape}")
    return array


def _pixel_set_name(items: Sequence[Image.Image | np.ndarray]) -> str:
    digest = hashlib.sha256()
    for item in items:
        pixels = _pixels(item)
        digest.update(str(pixels.shape).encode())
        digest.update(np.ascontiguousarray(pixels).tobytes())
    return "pixels-" + digest.hexdigest()[:16]


def _write_pixels(items: Sequence[Image.Image | np.ndarray], run_root: Path) -> Path:
    """Write each image as ``<run root>/imagesets/pixels-<digest>/image-NNNNN.png`` (once); returns the folder."""
    folder = runroot.imageset_dir(run_root, _pixel_set_name(items))
    if folder.is_dir() and len(list(folder.glob("image-*.png"))) == len(items):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for index, item in enumerate(items):
        buffer = io.BytesIO()
        Image.fromarray(_pixels(item)).save(buffer, format="PNG")
        target = folder / f"image-{index:05d}.png"
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(buffer.getvalue())
        partial.replace(target)
    return folder
