"""A feature store's folder on disk: lay one out, tell what a path holds, delete one safely.

Laying out writes, in this order: the group (marked ``initialising``), every array's
metadata, the image ids, and last the group attributes with provenance and the schema
record marked ``ready``. So metadata and ids always precede feature data, and a store
whose creation was interrupted is recognisable as such and never read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr

from cache.errors import InvalidInputError
from cache.provenance import hash_strings
from cache.schema import (
    FORMAT_VERSION, PROVENANCE_KEY, SCHEMA_KEY, StoreLayout, channel_dim, global_array_name, local_array_name,
    n_chunks_for,
)

SHOWN = 5  # how many ids or chunks an error message lists before summarising
#: Array of per-image content digests (``sha256:<hex>`` of each file's bytes), written by ``bddn features``.
IMAGE_DIGEST = "image_digest"
#: Array of each finished chunk's file size per feature array (bytes; 0 = not recorded), shape
#: (n_chunks, n_feature_arrays) in sorted array-name order: lets a cheap check catch truncated files.
CHUNK_BYTES = "chunk_bytes"
#: Arrays of a store that hold no features.
RECORD_ARRAYS = ("chunk_done", "image_id", IMAGE_DIGEST, CHUNK_BYTES)


def chunk_file(store_path: Path, array: Any, chunk: int) -> Path:
    """The file holding image block ``chunk`` of ``array`` in a store on the local file system."""
    key = array.metadata.chunk_key_encoding.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))
    return Path(store_path) / array.path / key
#: The codec of every feature array, as recorded in the schema record.
CODEC = "zstd(level=1)+crc32c"


def feature_compressors() -> tuple[Any, ...]:
    """Codecs for feature arrays: zstd level 1, then a CRC-32C checksum of each compressed chunk.

    The checksum makes every chunk verifiable: a truncated or altered chunk file fails to
    decode instead of reading back as garbage (``cache.integrity``); it costs 4 bytes per chunk.

    Measured on real mobilenet_v2 features (float16, 8x8 grid): zstd compresses 1.55x at
    level 1 and at its default level 3 alike, and Blosc zstd + byte shuffle gains nothing
    over it (1.55x) while decoding ~1.5x slower; level 1 encodes ~1.4x faster than level
    3, which matters because extraction writes while the model runs. Random (incompressible)
    features: see bench/store_read.py. Named here rather than left to zarr's default so
    the recorded codec stays true across zarr versions.
    """
    return (zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec())


def build_store(path: Path, *, ids: list[str], layout: StoreLayout, provenance: dict[str, Any]) -> None:
    """Write a new store's metadata, arrays and image ids at ``path`` (which must not exist).

    ``layout`` must be resolved (``chunk_images`` set); every array is chunked by that
    many images, ``chunk_done`` by one block per zarr chunk. Feature arrays are filled
    with NaN until written.
    """
    group = zarr.open_group(path, mode="w", attributes={SCHEMA_KEY: {"state": "initialising"}})
    n_images, rows, n_layers = len(ids), layout.chunk_images, layout.n_layers
    for index, (name, width) in enumerate(zip(layout.layer_names, layout.n_channels)):
        about = {"layer_name": name, "layer_index": index, "coordinates": "image_id"}
        for grid in layout.grids:
            group.create_array(
                local_array_name(index, grid, n_layers), shape=(n_images, width, grid, grid),
                chunks=(rows, width, grid, grid), dtype=layout.dtype, fill_value=np.nan,
                compressors=feature_compressors(), attributes={**about, "kind": "local", "grid": grid},
                dimension_names=("image", channel_dim(index, n_layers), f"grid{grid}_y", f"grid{grid}_x"))
        group.create_array(
            global_array_name(index, n_layers), shape=(n_images, width), chunks=(rows, width),
            dtype=layout.dtype, fill_value=np.nan, compressors=feature_compressors(),
            attributes={**about, "kind": "global"}, dimension_names=("image", channel_dim(index, n_layers)))
    group.create_array("chunk_done", shape=(n_chunks_for(n_images, rows),), chunks=(1,), dtype="uint8",
                       fill_value=0, dimension_names=("chunk",),
                       attributes={"description": "1 once the image block's data is fully written"})
    n_feature_arrays = n_layers * (len(layout.grids) + 1)
    group.create_array(CHUNK_BYTES, shape=(n_chunks_for(n_images, rows), n_feature_arrays),
                       chunks=(1, n_feature_arrays), dtype="int64", fill_value=0, dimension_names=("chunk", "array"),
                       attributes={"description": "file size of each finished chunk, per feature array in sorted "
                                                  "name order (0 = not recorded)"})
    id_array = group.create_array("image_id", shape=(n_images,), chunks=(rows,), dtype=str,
                                  dimension_names=("image",))
    id_array[:] = np.asarray(ids, dtype=str)
    group.attrs.update({
        PROVENANCE_KEY: provenance,
        SCHEMA_KEY: {"state": "ready", "format_version": FORMAT_VERSION, "layout": layout.to_dict(),
                     "n_images": n_images, "image_ids_sha256": hash_strings(ids), "codec": CODEC},
    })


def probe_store(path: Path) -> str:
    """What is at ``path``: ``absent``, ``empty`` (a folder), ``foreign`` (anything that is
    not a feature store), ``initialising`` (creation interrupted) or ``ready``."""
    if not path.exists():
        return "absent"
    if path.is_dir() and not any(path.iterdir()):
        return "empty"
    if not (path / "zarr.json").is_file():
        return "foreign"
    try:
        record = zarr.open_group(path, mode="r").attrs.get(SCHEMA_KEY)
    except Exception:  # any unreadable metadata: not something we may read or delete
        return "foreign"
    if not isinstance(record, dict):
        return "foreign"
    return "ready" if record.get("state") == "ready" else "initialising"


def remove_store(path: Path) -> None:
    """Delete a store so that no interruption can leave it looking usable.

    The folder is first renamed (atomic), so a kill during the deletion leaves only a
    hidden ``.<name>.deleting-<pid>`` folder, never a store whose data is partly gone.
    """
    doomed = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def validated_ids(image_ids: Sequence[str]) -> list[str]:
    """The ids as a list of str; InvalidInputError when empty, not strings, or repeated."""
    ids = list(image_ids)
    if not ids:
        raise InvalidInputError("a feature store needs at least one image id; the list is empty")
    bad = [value for value in ids if not isinstance(value, (str, np.str_)) or not value]
    if bad:
        raise InvalidInputError(f"image ids must be non-empty strings; got {bad[:SHOWN]!r}")
    ids = [str(value) for value in ids]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        repeated = [value for value in ids if value in seen or seen.add(value)]
        raise InvalidInputError(
            f"image ids must be unique; {len(repeated)} repeat (first: {repeated[:SHOWN]}). Remove duplicate images")
    return ids


def describe_id_changes(stored: np.ndarray, requested: list[str]) -> str:
    """For a mismatch message: how the requested id list differs from the stored one."""
    old, new = set(stored.tolist()), set(requested)
    if old == new:
        return "" if stored.tolist() == requested else "; image ids: same ids in a different order"
    added, removed = sorted(new - old), sorted(old - new)
    return (f"; image ids: {len(added)} requested not stored (first: {added[:SHOWN]}), "
            f"{len(removed)} stored not requested (first: {removed[:SHOWN]})")
