"""The feature store's fixed schema: layout, array names, chunk size, provenance rules.

A store is one Zarr v3 group per (image set, model). Its arrays, all chunked along
images only with the same ``chunk_images`` rows per chunk:

- ``image_id``: strings, shape (n_images,); the row key.
- ``local_{g}x{g}_layer_{i}``: shape (n_images, n_channels_i, g, g) per layer ``i`` and grid ``g``.
- ``global_layer_{i}``: shape (n_images, n_channels_i).
- ``chunk_done``: uint8, shape (n_chunks,), one value per zarr chunk; 1 once that image
  block's data is fully written.
- ``chunk_bytes``: int64, shape (n_chunks, n_feature_arrays); each finished block's file
  size per feature array (sorted names), so a truncated file is found without decoding it.
- ``image_digest``: strings, shape (n_images,); ``sha256:<hex>`` of each image file's bytes
  when its features were extracted (written by ``bddn features``), so a changed image is found.

Feature chunks are compressed with zstd and carry a CRC-32C checksum (``cache.folder``);
``cache.integrity`` checks a finished store. Stores made before ``chunk_bytes``,
``image_digest`` or the checksum existed still open; those checks are skipped for them.

A store can gain images (``cache.extend``): new ids are appended after the stored ones, the
schema record's ``n_images`` and ``image_ids_sha256`` change (and ``extensions`` lists each
growth: ``from_n_images``, ``added``); an ``extending`` entry marks a growth in progress.

Every array carries Zarr v3 ``dimension_names``: ``image``, ``channel_{i}`` (channel
widths differ between layers, so each layer has its own channel dimension),
``grid{g}_y``/``grid{g}_x`` and ``chunk``, so ``xarray.open_zarr`` labels them.

Because every array shares the same image blocks (and ``chunk_done`` and ``chunk_bytes``
have one zarr chunk per block), two processes writing different blocks never touch the same file:
no locks are needed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from cache.errors import InvalidInputError
from cache.jsondata import to_json_data

#: Version of the on-disk schema described above; bump on any incompatible change.
FORMAT_VERSION = 1
#: Group attribute holding the schema record (format version, layout, image id hash).
SCHEMA_KEY = "bddn_feature_store"
#: Group attribute holding the caller's provenance dict.
PROVENANCE_KEY = "provenance"
#: Top-level provenance keys that are recorded but never compared when a store is
#: reopened: they describe the run (package versions, host, timestamps, batch size,
#: workers, device), not the features.
VOLATILE_PROVENANCE_KEYS = ("environment", "run")
#: Element types a store may hold.
ALLOWED_DTYPES = ("float16", "float32")
#: Size aimed at for one zarr chunk of the largest feature array (see ``choose_chunk_images``).
TARGET_CHUNK_BYTES = 8 * 2**20
#: The grid read when the caller names none, if the store has it (the paper's 8x8).
DEFAULT_GRID = 8


@dataclass(frozen=True)
class StoreLayout:
    """What a store holds per image: which layers, how wide, at which grids, in which dtype.

    Attributes:
        layer_names: one name per layer, in depth order (any strings, unique).
        n_channels: channel width per layer (layers may differ).
        grids: side lengths of the pooled local-token grids stored per layer (e.g. (16, 8)).
        dtype: element type on disk, one of ``ALLOWED_DTYPES``.
        chunk_images: images per chunk; ``None`` chooses it so that one zarr chunk of
            the largest feature array is about 8 MiB (see ``choose_chunk_images``).
    """

    layer_names: tuple[str, ...]
    n_channels: tuple[int, ...]
    grids: tuple[int, ...] = (DEFAULT_GRID,)
    dtype: str = "float16"
    chunk_images: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_names", tuple(str(name) for name in self.layer_names))
        object.__setattr__(self, "n_channels", tuple(_positive_ints(self.n_channels, "n_channels")))
        object.__setattr__(self, "grids", tuple(_positive_ints(self.grids, "grids")))
        if not self.layer_names:
            raise InvalidInputError("StoreLayout needs at least one layer; layer_names is empty")
        if len(set(self.layer_names)) != len(self.layer_names):
            raise InvalidInputError(f"StoreLayout layer_names must be unique, got {list(self.layer_names)}")
        if len(self.n_channels) != len(self.layer_names):
            raise InvalidInputError(
                f"StoreLayout needs one channel width per layer: {len(self.layer_names)} layer names "
                f"but {len(self.n_channels)} widths {list(self.n_channels)}")
        if not self.grids or len(set(self.grids)) != len(self.grids):
            raise InvalidInputError(f"StoreLayout grids must be distinct positive sizes, got {list(self.grids)}")
        if self.dtype not in ALLOWED_DTYPES:
            raise InvalidInputError(f"StoreLayout dtype {self.dtype!r} is not supported; use one of {ALLOWED_DTYPES}")
        if self.chunk_images is not None and (not isinstance(self.chunk_images, int) or self.chunk_images < 1):
            raise InvalidInputError(f"StoreLayout chunk_images must be a positive integer or None, got {self.chunk_images!r}")

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    def bytes_per_image(self) -> int:
        """Bytes one image occupies in the largest feature array (uncompressed)."""
        itemsize = np.dtype(self.dtype).itemsize
        return max(self.n_channels) * max(max(self.grids) ** 2, 1) * itemsize

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of the layout (tuples become lists)."""
        return to_json_data(self)


def _positive_ints(values: Any, name: str) -> list[int]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidInputError(f"StoreLayout {name} must be positive integers, got {list(values)}")
        out.append(int(value))
    return out


def choose_chunk_images(layout: StoreLayout, n_images: int) -> int:
    """Images per chunk: the layout's choice, else about ``TARGET_CHUNK_BYTES`` per array chunk.

    The size target applies to one zarr chunk of the *largest* array (widest layer at the
    finest grid), not to the sum over layers: a reader decodes every layer's chunk of one
    image block at once, so memory per block is roughly n_layers x the target, and smaller
    arrays still get chunks large enough to read efficiently. Always within 1..n_images.
    """
    if layout.chunk_images is not None:
        wanted = layout.chunk_images
    else:
        wanted = max(1, TARGET_CHUNK_BYTES // layout.bytes_per_image())
    return max(1, min(wanted, n_images))


def resolved_layout(layout: StoreLayout, n_images: int) -> StoreLayout:
    """The layout with ``chunk_images`` fixed to the value a store of ``n_images`` uses."""
    return StoreLayout(layer_names=layout.layer_names, n_channels=layout.n_channels, grids=layout.grids,
                       dtype=layout.dtype, chunk_images=choose_chunk_images(layout, n_images))


def n_chunks_for(n_images: int, chunk_images: int) -> int:
    """Number of image blocks covering ``n_images`` rows."""
    return math.ceil(n_images / chunk_images)


def _index_width(n_layers: int) -> int:
    return max(2, len(str(n_layers - 1)))


def local_array_name(layer: int, grid: int, n_layers: int) -> str:
    """Name of layer ``layer``'s local-token array at ``grid`` (e.g. ``local_8x8_layer_03``)."""
    return f"local_{grid}x{grid}_layer_{layer:0{_index_width(n_layers)}d}"


def global_array_name(layer: int, n_layers: int) -> str:
    """Name of layer ``layer``'s global-token array (e.g. ``global_layer_03``)."""
    return f"global_layer_{layer:0{_index_width(n_layers)}d}"


def channel_dim(layer: int, n_layers: int) -> str:
    """Dimension name of layer ``layer``'s channels (widths differ, so one per layer)."""
    return f"channel_{layer:0{_index_width(n_layers)}d}"


def json_ready(value: Any) -> Any:
    """``value`` as it reads back from JSON attributes (tuples -> lists, keys -> str).

    Raises InvalidInputError when it cannot be stored as JSON.
    """
    try:
        return to_json_data(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"store provenance must be plain JSON data (dicts, lists, str, numbers): {error}") from None


def _flatten(record: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in record.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, dotted + ".")
        else:
            yield dotted, value


def identity_record(*, layout: StoreLayout, image_ids_sha256: str, n_images: int,
                    provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The values that define a store's features, as compared on reopening.

    Everything in ``provenance`` except ``VOLATILE_PROVENANCE_KEYS``, plus the resolved
    layout, the number of images and the SHA-256 of the image id list.
    """
    stable = {key: value for key, value in provenance.items() if key not in VOLATILE_PROVENANCE_KEYS}
    return json_ready({
        "format_version": FORMAT_VERSION,
        "layout": layout.to_dict(),
        "n_images": n_images,
        "image_ids_sha256": image_ids_sha256,
        "provenance": stable,
    })


def describe_differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """One line per dotted key whose value differs, e.g. ``"layout.grids: stored [8], requested [16, 8]"``."""
    old, new = dict(_flatten(stored)), dict(_flatten(requested))
    missing = object()
    lines = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, missing), new.get(key, missing)
        if before != after:
            shown_before = "(absent)" if before is missing else json.dumps(before)
            shown_after = "(absent)" if after is missing else json.dumps(after)
            lines.append(f"{key}: stored {shown_before}, requested {shown_after}")
    return lines
