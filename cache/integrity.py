"""Checking a finished feature store before it is trusted: which chunks are missing or damaged.

A complete store is trusted by its completion records, so damage after the fact (a chunk
file deleted, truncated, or altered on disk) would otherwise read back as NaN or garbage.
Two checks, both returning the damaged image blocks with the reason:

* ``full=False`` (every ``bddn features`` run on a finished store, ~a file-system ``stat``
  per array and chunk): every finished chunk of every feature array has a file of the
  size recorded when it was written (missing, empty and truncated files);
* ``full=True`` (``bddn features --verify``): every finished chunk also decodes (each
  compressed chunk carries a CRC-32C checksum, ``cache.folder.feature_compressors``) and
  holds only finite values (an unwritten chunk reads as NaN, the fill value).

The blocks found are handed back to extraction (``FeatureStore.reopen_chunks``), which
computes exactly those again. A fit runs the first check on just the chunks it is about to
read (``require_chunk_files``) and stops at the first damaged one instead.
"""

from __future__ import annotations

import numpy as np

from cache.errors import DamagedStoreError
from cache.folder import chunk_file
from cache.schema import global_array_name, local_array_name
from cache.store import FeatureStore


def damaged_chunks(store: FeatureStore, *, full: bool = False) -> dict[int, str]:
    """Finished image blocks of ``store`` that are missing or damaged -> the first problem found in each."""
    pending = set(store.pending_chunks())
    finished = [chunk for chunk in range(store.n_chunks) if chunk not in pending]
    recorded = store.recorded_chunk_bytes()
    found: dict[int, str] = {}
    for column, (name, array) in enumerate(sorted(store.feature_arrays().items())):
        for chunk in finished:
            if chunk in found:
                continue
            problem = _chunk_file_problem(store, array, chunk, _recorded_size(recorded, chunk, column))
            if problem is None and full:
                problem = _chunk_content_problem(store, array, chunk)
            if problem is not None:
                found[chunk] = f"array {name}: {problem}"
    return dict(sorted(found.items()))


def require_chunk_files(store: FeatureStore, rows: np.ndarray, *, grid: int) -> None:
    """Refuse a read of ``rows`` at ``grid`` whose chunk files are not all there with their recorded sizes.

    Run by every fit before it reads (``stages.fit.inputs.check_inputs``): a missing chunk
    file reads back as NaN (the fill value) and a truncated one fails mid-fit. Checks the
    chunks holding ``rows`` (int array of store rows) in every layer's local array at ``grid``
    and global array, which is what the fitters' reads decode: one ``stat`` per array and chunk.

    Raises:
        DamagedStoreError: one line naming the store, the array, the chunk, its file's problem and
            ``bddn features`` (which finds missing and truncated chunk files and extracts them again).
    """
    arrays = store.feature_arrays()
    columns = {name: column for column, name in enumerate(sorted(arrays))}
    names = [local_array_name(layer, grid, store.n_layers) for layer in range(store.n_layers)]
    names += [global_array_name(layer, store.n_layers) for layer in range(store.n_layers)]
    recorded = store.recorded_chunk_bytes()
    for chunk in np.unique(np.asarray(rows) // store.chunk_images).tolist():
        for name in names:
            problem = _chunk_file_problem(store, arrays[name], chunk, _recorded_size(recorded, chunk, columns[name]))
            if problem is not None:
                raise DamagedStoreError(
                    f"feature store {store.path}: array {name}, chunk {chunk}: {problem}; rerun `bddn features` with "
                    f"the same options: it finds missing and truncated chunk files and extracts those chunks again")


def _recorded_size(recorded: np.ndarray | None, chunk: int, column: int) -> int:
    """The size recorded for a chunk's file when it was written; 0 (unknown) for a store without the record."""
    return int(recorded[chunk, column]) if recorded is not None else 0


def _chunk_file_problem(store: FeatureStore, array, chunk: int, expected: int) -> str | None:
    """Why the chunk's file is unusable (absent, empty, or not the size written), or None; only local stores
    have files to check."""
    if not store.path.is_dir():
        return None
    path = chunk_file(store.path, array, chunk)
    if not path.is_file():
        return f"chunk file {path} is missing"
    size = path.stat().st_size
    if size == 0:
        return f"chunk file {path} is empty"
    if expected and size != expected:
        return f"chunk file {path} has {size} bytes, {expected} were written"
    return None


def _chunk_content_problem(store: FeatureStore, array, chunk: int) -> str | None:
    """Why the chunk's values are unusable (fails to decode, or holds NaN/Inf), or None."""
    rows = store.chunk_rows(chunk)
    try:
        values = array[rows]
    except Exception as error:   # zstd or checksum errors from the codec pipeline
        return f"chunk {chunk} does not decode ({type(error).__name__})"
    if not np.isfinite(values).all():
        return f"chunk {chunk} holds NaN/Inf"
    return None
