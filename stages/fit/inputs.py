"""A fit's inputs checked before any training: the subject against the store, and the stores of a joint fit.

Every bad-input case raises before a model is built, naming the subject or store, the
value and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cache.errors import IncompleteStoreError, InvalidInputError, StoreMismatchError
from cache.integrity import require_chunk_files
from cache.store import FeatureStore
from stages.subject import Subject


def store_model_id(store: FeatureStore) -> str:
    """The model id recorded in the store's provenance (``""`` when it records none)."""
    record = store.provenance.get("model")
    return str(record.get("model_id", "")) if isinstance(record, dict) else str(record or "")


def fitted_layer_indices(store: FeatureStore, layer_names: Sequence[str], grid: int) -> list[int]:
    """The store's index of each of a finished fit's ``layer_names``, after checking that it also holds ``grid``.

    Raises:
        StoreMismatchError: a layer is missing from the store, or the grid is not stored.
    """
    missing = [name for name in layer_names if name not in store.layer_names]
    if missing:
        raise StoreMismatchError(f"feature store {store.path} lacks the fitted layers {missing}; it holds "
                                 f"{list(store.layer_names)}")
    if grid not in store.grids:
        raise StoreMismatchError(f"feature store {store.path} holds grids {list(store.grids)}, not the fit's "
                                 f"{grid}x{grid}")
    return [list(store.layer_names).index(name) for name in layer_names]


def check_stores(stores: Sequence[FeatureStore]) -> None:
    """The stores of a joint fit must come from one model: same layers, channel widths and model id.

    Raises:
        StoreMismatchError: naming the two stores and what differs.
    """
    first = stores[0]
    for store in stores[1:]:
        for what, value in (("layers", lambda s: list(s.layer_names)), ("channel widths", lambda s: list(s.n_channels)),
                            ("model", store_model_id)):
            if value(store) != value(first):
                raise StoreMismatchError(
                    f"feature stores {first.path} and {store.path} differ in {what} ({value(first)} vs "
                    f"{value(store)}); subjects fitted together need features of the same model and layers")


def check_inputs(store: FeatureStore, subject: Subject, *, layers: Sequence[str] | None, grid: int, min_train: int,
                 neighbours: np.ndarray | None = None) -> list[int]:
    """Every bad-input case, caught before fitting; returns the store indices of the chosen layers.

    Args:
        store, subject: the fit's features and responses.
        layers: store layer names to fit on, in order; ``None`` = every stored layer.
        grid: the stored local grid the fit reads.
        min_train: the fewest training images the fit can use (at least 2 are always required).
        neighbours: int array of shape (n_edges, 2) of neighbouring vertex pairs, or None.

    Raises:
        InvalidInputError: NaN/inf responses, too few images in a split, a missing grid, bad neighbours.
        StoreMismatchError: configured layers absent from the store.
        IncompleteStoreError: the store lacks some of the subject's images (from ``store.rows_for``).
        DamagedStoreError: a chunk file holding the subject's images at ``grid`` is missing or not
            the size written (``cache.integrity.require_chunk_files``; every fit passes here).
    """
    if layers is None:
        layer_indices = list(range(store.n_layers))
    else:
        missing = [name for name in layers if name not in store.layer_names]
        if missing:
            raise StoreMismatchError(
                f"layers {missing} are not in the feature store {store.path}, which has {list(store.layer_names)}; "
                "fix the config's `layers` or leave it unset to use every stored layer")
        layer_indices = [list(store.layer_names).index(name) for name in layers]
    if grid not in store.grids:
        raise InvalidInputError(f"grid {grid} is not stored in {store.path} (it has {list(store.grids)}); "
                                f"set grid to one of those")
    responses = np.asarray(subject.responses)
    bad = ~np.isfinite(responses)
    if bad.any():
        images, vertices = np.nonzero(bad)
        raise InvalidInputError(
            f"subject {subject.name}: responses hold {int(bad.sum())} NaN/inf values in {len(np.unique(vertices))} "
            f"vertices (first at image row {images[0]}, vertex {vertices[0]}); remove or impute them before fitting")
    needs = {"train": max(min_train, 2), "val": 2}
    for split, minimum in needs.items():
        n = len(subject.splits.get(split, ()))
        if n < minimum:
            raise InvalidInputError(
                f"subject {subject.name}: the {split} split has {n} images, at least {minimum} are needed; "
                "use more images, a smaller batch size or another split fraction")
    if neighbours is not None:
        edges = np.asarray(neighbours)
        if edges.ndim != 2 or edges.shape[1] != 2 or (edges.size and (edges.min() < 0 or edges.max() >= subject.n_vertices)):
            raise InvalidInputError(f"neighbours must be an int array of shape (n_edges, 2) indexing the "
                                    f"{subject.n_vertices} vertices, got shape {edges.shape}")
    try:
        rows = store.rows_for(subject.stimulus_ids)
    except IncompleteStoreError as error:
        raise IncompleteStoreError(f"subject {subject.name}: {error}") from error
    require_chunk_files(store, rows, grid=grid)
    return layer_indices
