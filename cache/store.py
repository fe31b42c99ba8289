"""The feature store: a resumable, kill-safe Zarr v3 group of per-layer features.

``FeatureStore.create`` lays out a store (schema in ``cache.schema``) and records
provenance; ``write_chunk`` fills one image block, data first and its completion
record last, so a killed writer leaves that block pending and a rerun redoes it;
``rows_for``, ``read`` and ``iter_batches`` serve stage two from finished blocks only.

Provenance rule: the caller's ``provenance`` dict is stored whole. On reopening, every
key is compared except the top-level ``"environment"`` and ``"run"`` entries (package
versions, host, timestamps, batch size, workers, device), which describe the run
rather than the features. The layout, image count and image id hash are always compared.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import zarr

from cache.batches import (
    FeatureBatch, BlockReader, ReadCounter, all_finite, batch_positions, iter_feature_batches, read_features,
)
from cache.extend import refuse_unfinished_extension
from cache.errors import IncompleteStoreError, InvalidInputError, MissingInputError, StoreMismatchError
from cache.folder import CHUNK_BYTES, IMAGE_DIGEST, RECORD_ARRAYS, SHOWN, build_store, chunk_file, describe_id_changes, probe_store, remove_store, validated_ids
from cache.provenance import hash_strings
from cache.schema import (
    DEFAULT_GRID, FORMAT_VERSION, PROVENANCE_KEY, SCHEMA_KEY, StoreLayout, describe_differences, global_array_name,
    identity_record, json_ready, local_array_name, n_chunks_for, resolved_layout,
)

__all__ = ["FeatureStore", "FeatureBatch", "StoreLayout"]

#: Most threads encoding one block's arrays at once (zstd releases the GIL).
MAX_WRITE_THREADS = 8


class FeatureStore:
    """One Zarr v3 group of features for one (image set, model); see ``cache.schema`` for the arrays.

    Attributes:
        path: the store's folder.
        image_ids: array of shape (n_images,) of str: the row keys.
        layout: the resolved StoreLayout; ``layer_names``, ``n_channels``, ``grids``,
            ``n_layers``, ``chunk_images`` repeat its fields.
        n_images, n_chunks: rows, and image blocks of ``chunk_images`` rows covering them.
        provenance: the dict the store was created with.
        reads: bytes decoded and blocks read by this object's ``read`` and ``iter_batches`` so far.

    A FeatureStore object sees blocks that other processes finish while it is open, but
    not a store deleted and rebuilt under it (open it again after ``overwrite``).
    Pickling keeps only the path, so dask workers reopen the store themselves.
    """

    def __init__(self, path: Path, group: zarr.Group) -> None:
        """Wrap an opened, validated group; use ``create`` or ``open`` instead."""
        record = group.attrs[SCHEMA_KEY]
        self.path = path
        self.layout = StoreLayout(**record["layout"])
        self.provenance: dict[str, Any] = dict(group.attrs.get(PROVENANCE_KEY, {}))
        self._record = record
        # Every block is written whole and never as fill values (NaN is refused), so zarr's
        # per-chunk "all fill value?" test is skipped: on float16 it costs as much as zstd.
        self._arrays: dict[str, zarr.Array] = {
            name: array.with_config({"write_empty_chunks": True}) for name, array in group.arrays()}
        self.image_ids = np.asarray(group["image_id"][:].tolist(), dtype=str)
        self._row_of: dict[str, int] | None = None
        self._done: np.ndarray | None = None  # completion flags seen so far (a finished block stays finished)
        self.reads = ReadCounter()

    # ----------------------------------------------------------------- layout
    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.layout.layer_names

    @property
    def n_channels(self) -> tuple[int, ...]:
        return self.layout.n_channels

    @property
    def grids(self) -> tuple[int, ...]:
        return self.layout.grids

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def chunk_images(self) -> int:
        return int(self.layout.chunk_images)

    @property
    def n_chunks(self) -> int:
        return n_chunks_for(self.n_images, self.chunk_images)

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, n_images={self.n_images}, n_layers={self.n_layers}, "
                f"grids={self.grids}, dtype={self.layout.dtype!r}, chunks={self.n_chunks - len(self.pending_chunks())}"
                f"/{self.n_chunks} done)")

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickle as the path: a worker process reopens the store itself."""
        return (FeatureStore.open, (str(self.path),))

    # --------------------------------------------------------------- creation
    @classmethod
    def create(cls, path: str | Path, *, image_ids: Sequence[str], layout: StoreLayout, provenance: Mapping[str, Any],
               overwrite: bool = False) -> FeatureStore:
        """Lay out a new store for ``image_ids``, or reopen an identical one to resume it.

        An existing store built from the same request (layout, image ids, and every
        provenance key but ``"environment"`` and ``"run"``) is reopened as it is, finished
        chunks kept. A different one raises StoreMismatchError listing each differing key,
        unless ``overwrite`` is true: then it is deleted and rebuilt. Metadata and image ids
        are written before any feature data; a folder that is not a feature store is never
        deleted.
        """
        path = Path(path)
        ids = validated_ids(image_ids)
        layout = resolved_layout(layout, len(ids))
        provenance = json_ready(dict(provenance))
        requested = identity_record(layout=layout, image_ids_sha256=hash_strings(ids), n_images=len(ids),
                                    provenance=provenance)
        state = probe_store(path)
        if state == "foreign":
            raise InvalidInputError(
                f"{path} exists and is not a feature store; it is left untouched. Choose another run root or "
                f"remove it yourself")
        if state == "ready" and not overwrite:
            existing = cls.open(path)
            differences = describe_differences(existing.identity(), requested)
            if not differences:
                return existing
            raise StoreMismatchError(
                f"feature store {path} was built from a different request: " + "; ".join(differences)
                + describe_id_changes(existing.image_ids, ids)
                + ". Pass overwrite=True (CLI: --overwrite) to delete and rebuild it, or use another run root")
        if state != "absent":
            remove_store(path)
        build_store(path, ids=ids, layout=layout, provenance=provenance)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        """Open an existing store for reading or for writing chunks.

        Raises MissingInputError when ``path`` does not hold a finished-initialising
        feature store, InvalidInputError when its format version is not this one's.
        """
        path = Path(path)
        state = probe_store(path)
        if state == "absent":
            raise MissingInputError(f"no feature store at {path}; build it with `bddn features` (stage one)")
        if state == "foreign":
            raise MissingInputError(
                f"{path} is not a feature store (no Zarr v3 group with a {SCHEMA_KEY!r} record); "
                f"point at a <model>.zarr folder written by `bddn features`")
        if state in ("empty", "initialising"):
            raise MissingInputError(
                f"feature store {path} was never fully created (creation was interrupted); "
                f"rerun `bddn features` with --overwrite to rebuild it")
        group = zarr.open_group(path, mode="r+")
        refuse_unfinished_extension(path, group.attrs[SCHEMA_KEY])
        version = group.attrs[SCHEMA_KEY].get("format_version")
        if version != FORMAT_VERSION:
            raise InvalidInputError(
                f"feature store {path} has format version {version!r}; this bddn reads version {FORMAT_VERSION}. "
                f"Rebuild it with `bddn features --overwrite` or use the bddn version that wrote it")
        store = cls(path, group)
        store._check_arrays()
        return store

    def _check_arrays(self) -> None:
        expected = ["image_id", "chunk_done"]
        for index in range(self.n_layers):
            expected.append(global_array_name(index, self.n_layers))
            expected += [local_array_name(index, grid, self.n_layers) for grid in self.grids]
        present = set(self._arrays)
        missing = [name for name in expected if name not in present]
        if missing:
            raise InvalidInputError(
                f"feature store {self.path} lacks arrays {missing[:SHOWN]}; it is damaged. "
                f"Rebuild it with `bddn features --overwrite`")

    def identity(self) -> dict[str, Any]:
        """The values that define this store's features (compared when ``create`` reopens it)."""
        return identity_record(layout=self.layout, image_ids_sha256=self._record["image_ids_sha256"],
                               n_images=self.n_images, provenance=self.provenance)

    # ---------------------------------------------------------------- writing
    def chunk_rows(self, chunk: int) -> slice:
        """Rows of image block ``chunk`` (the last block may be shorter)."""
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or not 0 <= chunk < self.n_chunks:
            raise InvalidInputError(f"chunk {chunk!r} is out of range for {self.path}: it has chunks 0..{self.n_chunks - 1}")
        start = int(chunk) * self.chunk_images
        return slice(start, min(start + self.chunk_images, self.n_images))

    def pending_chunks(self) -> list[int]:
        """Blocks whose completion record is missing (never written, or interrupted), ascending."""
        return np.flatnonzero(self._done_flags() == 0).tolist()

    def reopen_chunks(self, chunks: Sequence[int]) -> None:
        """Clear the completion record of ``chunks`` (found damaged), so extraction computes them again."""
        records = self._arrays["chunk_done"]
        for chunk in chunks:
            records[int(chunk)] = 0
        self._done = None

    def feature_arrays(self) -> dict[str, zarr.Array]:
        """Every local and global feature array, by name."""
        return {name: array for name, array in self._arrays.items()
                if name not in RECORD_ARRAYS}

    # ---------------------------------------------------------- image content
    def image_digests(self) -> np.ndarray | None:
        """Each image's recorded content digest (str array in row order), or None for a store made before
        digests were recorded."""
        array = self._arrays.get(IMAGE_DIGEST)
        return None if array is None else np.asarray(array[:].tolist(), dtype=str)

    def changed_rows(self, digests: Sequence[str]) -> np.ndarray:
        """Rows whose image content differs from their recorded digest (int64, ascending); rows without one
        (none recorded yet, or added by an extension) never count as changed."""
        recorded = self.image_digests()
        if recorded is None:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero((recorded != np.asarray(digests, dtype=str)) & (recorded != "")).astype(np.int64)

    def record_image_digests(self, digests: Sequence[str]) -> None:
        """Record one content digest per image (row order), creating the array in a store that lacks it."""
        values = np.asarray(digests, dtype=str)
        if values.shape != (self.n_images,):
            raise InvalidInputError(f"{self.path}: {values.size} image digests for {self.n_images} images")
        if IMAGE_DIGEST not in self._arrays:
            group = zarr.open_group(self.path, mode="r+")
            self._arrays[IMAGE_DIGEST] = group.create_array(
                IMAGE_DIGEST, shape=(self.n_images,), chunks=(self.chunk_images,), dtype=str,
                dimension_names=("image",),
                attributes={"description": "sha256 of each image file's bytes when its features were extracted"})
        self._arrays[IMAGE_DIGEST][:] = values

    def is_complete(self) -> bool:
        """True when every block's data and completion record are written."""
        return not self.pending_chunks()

    def _done_flags(self) -> np.ndarray:
        """Completion flag per block, shape (n_chunks,); re-reads only blocks not yet seen done.

        Other processes may finish blocks meanwhile; they are picked up here. Finished
        blocks are not re-read, so a reader calling ``read`` per chunk costs no extra I/O.
        """
        records = self._arrays["chunk_done"]
        if self._done is None:
            self._done = np.asarray(records[:], dtype=np.uint8)
        elif not self._done.all():
            unseen = np.flatnonzero(self._done == 0)
            self._done[unseen] = records.get_orthogonal_selection((unseen,))
        return self._done

    def write_chunk(self, chunk: int, *, local: Mapping[int, Sequence[np.ndarray]],
                    global_: Sequence[np.ndarray]) -> None:
        """Write image block ``chunk``: every array's data, then its completion record.

        Args:
            chunk: block index in 0..n_chunks-1; its rows are ``chunk_rows(chunk)``.
            local: per grid, per layer, array of shape (n_rows, n_channels_l, grid, grid).
            global_: per layer, array of shape (n_rows, n_channels_l).

        Values are cast to the store dtype; a value that is not finite there (e.g. above
        float16's 65504) raises InvalidInputError rather than storing inf/nan. Different
        processes may write different blocks at the same time: blocks share no files.
        """
        rows = self.chunk_rows(chunk)
        n_rows = rows.stop - rows.start
        if sorted(local) != sorted(self.grids):
            raise InvalidInputError(f"write_chunk needs local arrays for grids {list(self.grids)}, got {sorted(local)}")
        wanted = []  # (array name, layer, expected shape, values)
        for grid in self.grids:
            wanted += [(local_array_name(layer, grid, self.n_layers), layer, (n_rows, width, grid, grid), values)
                       for layer, (width, values) in enumerate(zip(self.n_channels, self._per_layer(local[grid])))]
        wanted += [(global_array_name(layer, self.n_layers), layer, (n_rows, width), values)
                   for layer, (width, values) in enumerate(zip(self.n_channels, self._per_layer(global_)))]
        targets = [(name, self._cast(chunk, name, layer, shape, values)) for name, layer, shape, values in wanted]
        with ThreadPoolExecutor(max_workers=min(MAX_WRITE_THREADS, len(targets), os.cpu_count() or 1),
                                thread_name_prefix="feature-write") as pool:
            list(pool.map(lambda target: self._arrays[target[0]].__setitem__(rows, target[1]), targets))
        self._record_chunk_bytes(chunk)
        self._arrays["chunk_done"][chunk] = 1
        if self._done is not None:
            self._done[chunk] = 1

    def _record_chunk_bytes(self, chunk: int) -> None:
        """Record the size of each feature array's file for ``chunk`` (local stores made with the record)."""
        if CHUNK_BYTES not in self._arrays or not self.path.is_dir():
            return
        arrays = sorted(self.feature_arrays().items())
        sizes = [chunk_file(self.path, array, chunk).stat().st_size for _, array in arrays]
        self._arrays[CHUNK_BYTES][chunk] = np.asarray(sizes, dtype=np.int64)

    def recorded_chunk_bytes(self) -> np.ndarray | None:
        """Per chunk and feature array (sorted names), the file size recorded when it was written (0 = none),
        or None for a store made without the record."""
        array = self._arrays.get(CHUNK_BYTES)
        return None if array is None else np.asarray(array[:])

    def _per_layer(self, arrays: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        if len(arrays) != self.n_layers:
            raise InvalidInputError(f"write_chunk needs one array per layer ({self.n_layers}), got {len(arrays)}")
        return arrays

    def _cast(self, chunk: int, name: str, layer: int, shape: tuple[int, ...], values: np.ndarray) -> np.ndarray:
        """``values`` in the store dtype, after checking its shape and that every value fits."""
        values = np.asarray(values)
        if values.shape != shape:
            raise InvalidInputError(f"write_chunk({chunk}): {name} ({self.layer_names[layer]!r}) must have shape "
                                    f"{shape}, got {values.shape}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
            cast = values.astype(self.layout.dtype, copy=False)
        if not all_finite(cast):
            raise InvalidInputError(_non_finite_message(chunk, self.layer_names[layer], values, self.layout.dtype))
        return cast

    # ---------------------------------------------------------------- reading
    def rows_for(self, image_ids: Sequence[str]) -> np.ndarray:
        """Row index of each id, array of shape (len(image_ids),) int64.

        Raises IncompleteStoreError when ids are not in the store or lie in blocks whose
        extraction has not finished.
        """
        if self._row_of is None:
            self._row_of = {image_id: row for row, image_id in enumerate(self.image_ids.tolist())}
        wanted = [str(image_id) for image_id in image_ids]
        missing = [image_id for image_id in wanted if image_id not in self._row_of]
        if missing:
            raise IncompleteStoreError(
                f"{len(missing)} of {len(wanted)} requested image ids are not in feature store {self.path} "
                f"(first: {missing[:SHOWN]}); it holds {self.n_images} images. Extract features for an image "
                f"set that contains them")
        rows = np.fromiter((self._row_of[image_id] for image_id in wanted), dtype=np.int64, count=len(wanted))
        needed = np.unique(rows // self.chunk_images)
        unfinished = needed[self._done_flags()[needed] == 0]
        if unfinished.size:
            raise IncompleteStoreError(
                f"feature store {self.path}: {unfinished.size} chunk(s) holding requested images are not finished "
                f"(chunks {unfinished[:SHOWN].tolist()}); rerun `bddn features` with the same options to resume it")
        return rows

    def _reader(self, grid: int | None, layers: Sequence[int] | None) -> BlockReader:
        grid = self._pick_grid(grid)
        picked = range(self.n_layers) if layers is None else list(layers)
        bad = [layer for layer in picked if isinstance(layer, bool) or not isinstance(layer, (int, np.integer))
               or not 0 <= layer < self.n_layers]
        if bad or not picked:
            raise InvalidInputError(f"layers must be a non-empty list of layer indices 0..{self.n_layers - 1} of "
                                    f"{self.path}; got {list(picked)}")
        return BlockReader(
            local=[self._arrays[local_array_name(int(l), grid, self.n_layers)] for l in picked],
            global_=[self._arrays[global_array_name(int(l), self.n_layers)] for l in picked],
            chunk_images=self.chunk_images, source=f"feature store {self.path}", counter=self.reads)

    def _pick_grid(self, grid: int | None) -> int:
        if grid is None:
            return DEFAULT_GRID if DEFAULT_GRID in self.grids else max(self.grids)
        if grid not in self.grids:
            raise InvalidInputError(f"feature store {self.path} has grids {list(self.grids)}, not {grid}; "
                                    f"pick one of those or re-extract with --grid {grid}")
        return int(grid)

    def read(self, image_ids: Sequence[str], *, grid: int | None = None,
             layers: Sequence[int] | None = None) -> FeatureBatch:
        """Features of ``image_ids`` in the order given, as one batch (for counts that fit in memory).

        ``grid`` None reads the default grid: 8 when stored, else the finest. ``layers``
        (indices) reads only those layers, in that order; None reads all.
        """
        rows = self.rows_for(image_ids)
        return read_features(self._reader(grid, layers), rows, self.image_ids)

    def iter_batches(self, image_ids: Sequence[str], *, batch_size: int, grid: int | None = None,
                     shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                     layers: Sequence[int] | None = None) -> Iterator[FeatureBatch]:
        """Batches covering ``image_ids`` once each, reading every needed chunk exactly once.

        Order follows the chunks (ascending, or a seeded permutation of chunks and of the
        rows inside each when ``shuffle``); ``positions`` in each batch index into
        ``image_ids``. The next chunk is read in the background while the current one is
        served; memory stays around three chunks of every layer plus one batch, whatever
        the number of ids (see ``cache.batches``). ``grid`` and ``layers`` as in ``read``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        rows = self.rows_for(image_ids)
        return iter_feature_batches(self._reader(grid, layers), rows, self.image_ids, batch_size=int(batch_size),
                                    shuffle=shuffle, seed=seed, drop_last=drop_last)

    def batch_order(self, image_ids: Sequence[str], *, batch_size: int) -> list[np.ndarray]:
        """The positions (into ``image_ids``) of each batch ``iter_batches`` yields without shuffling, computed
        without reading: features held elsewhere can be replayed in the store's order."""
        return batch_positions(self.rows_for(image_ids), self.chunk_images, batch_size=int(batch_size))


def _non_finite_message(chunk: int, layer: str, values: np.ndarray, dtype: str) -> str:
    wide = values.astype(np.float64)
    finite = np.isfinite(wide)
    if not finite.all():
        return (f"write_chunk({chunk}): layer {layer!r} has {int((~finite).sum())} inf/nan values in the model "
                f"output itself; the features are unusable (check the model, its weights and the input images)")
    return (f"write_chunk({chunk}): layer {layer!r} has values up to {np.abs(wide).max():.4g}, beyond what {dtype} "
            f"holds (65504 for float16); store float32 features instead (--dtype float32)")
