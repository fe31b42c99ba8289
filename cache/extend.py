"""Grow a feature store by new images: only their rows are extracted, every finished chunk is kept.

An image set that spans subjects (one store per model over the union of the subjects'
stimuli) gains images when a subject is added. :func:`extend_store` appends the new ids
after the stored ones, so existing rows keep their place and their finished chunks; the
new rows start pending, and a last chunk that was short (and now gains rows) is reopened
so it is extracted whole again (at most one chunk of recomputation).

Provenance: the extension is refused unless the request matches the store in every
compared key except the id list itself (``image_ids_sha256``, ``n_images``), so a store
never mixes features of two models, preprocessings or layouts.

Kill safety: the target (``n_images``, id hash) is recorded in the schema record under
``"extending"`` before any array changes; every step after it is idempotent (resize to the
target, write the tail ids, reopen the short chunk), and the record's ``n_images`` and hash
change last. A store with an unfinished extension is refused by ``FeatureStore.open`` with
the command that finishes it: the same request, which runs :func:`extend_store` again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import zarr

from cache.errors import InvalidInputError, StoreMismatchError
from cache.folder import CHUNK_BYTES, IMAGE_DIGEST, SHOWN, validated_ids
from cache.provenance import hash_strings
from cache.schema import PROVENANCE_KEY, SCHEMA_KEY, StoreLayout, describe_differences, identity_record, json_ready, n_chunks_for

#: Keys that differ between a store and its extension (the id list and what is derived from it).
_ID_KEYS = ("n_images", "image_ids_sha256", "provenance.image_ids_sha256")


def extend_store(path: str | Path, *, image_ids: Sequence[str], provenance: Mapping[str, Any]) -> list[str]:
    """Make the store at ``path`` hold ``image_ids``: the stored ids first, in their order, then the new ones.

    Args:
        path: an existing feature store (possibly with an interrupted extension).
        image_ids: the full requested id list in store-row order: the stored ids, then the new ones.
        provenance: the request's provenance (for the full list), compared with the stored one.

    Returns the ids appended (empty when the store already holds exactly ``image_ids``).
    Raises StoreMismatchError when the stored ids are not the leading part of ``image_ids`` or
    the request differs from the store in anything but its ids.
    """
    path = Path(path)
    ids = validated_ids(image_ids)
    group = zarr.open_group(path, mode="r+")
    record = dict(group.attrs[SCHEMA_KEY])
    old_n = int(record["n_images"])
    stored = np.asarray(group["image_id"][:old_n].tolist(), dtype=str).tolist()
    if ids[:old_n] != stored:
        raise StoreMismatchError(
            f"feature store {path} holds {old_n} images that are not the first of the {len(ids)} requested; "
            "a store can only gain images (pass every image it was built from, plus the new ones)")
    layout = StoreLayout(**record["layout"])
    ids_sha256 = hash_strings(ids)
    requested = identity_record(layout=layout, image_ids_sha256=ids_sha256, n_images=len(ids),
                                provenance=json_ready(dict(provenance)))
    stored_identity = identity_record(layout=layout, image_ids_sha256=record["image_ids_sha256"], n_images=old_n,
                                      provenance=group.attrs.get(PROVENANCE_KEY, {}))
    differences = [line for line in describe_differences(stored_identity, requested)
                   if line.split(":", 1)[0] not in _ID_KEYS]
    if differences:
        raise StoreMismatchError(f"feature store {path} cannot be extended: it was built from a different request: "
                                 + "; ".join(differences[:SHOWN]) + ". Use another image set name or --overwrite")
    added = ids[old_n:]
    if not added:
        return []
    target = {"n_images": len(ids), "image_ids_sha256": ids_sha256}
    group.attrs[SCHEMA_KEY] = {**record, "extending": target}
    _grow_arrays(group, ids, old_n=old_n, chunk_images=int(layout.chunk_images))
    stored_provenance = dict(group.attrs.get(PROVENANCE_KEY, {}))
    if "image_ids_sha256" in stored_provenance:
        stored_provenance["image_ids_sha256"] = target["image_ids_sha256"]
    extensions = [*record.get("extensions", []), {"from_n_images": old_n, "added": len(added)}]
    group.attrs.update({PROVENANCE_KEY: stored_provenance,
                        SCHEMA_KEY: {**{key: value for key, value in record.items() if key != "extending"},
                                     **target, "extensions": extensions}})
    return added


def _grow_arrays(group: zarr.Group, ids: list[str], *, old_n: int, chunk_images: int) -> None:
    """Resize every array to ``len(ids)`` rows (and chunks), write the new ids, reopen a short last chunk."""
    n_images = len(ids)
    n_chunks = n_chunks_for(n_images, chunk_images)
    for name, array in group.arrays():
        if name in ("chunk_done", CHUNK_BYTES):
            array.resize((n_chunks, *array.shape[1:]))
        else:
            array.resize((n_images, *array.shape[1:]))
    group["image_id"][old_n:] = np.asarray(ids[old_n:], dtype=str)
    if IMAGE_DIGEST in group:
        group[IMAGE_DIGEST][old_n:] = np.asarray([""] * (n_images - old_n), dtype=str)
    if old_n % chunk_images:   # the old last chunk was short: it gains rows and is extracted whole again
        short = old_n // chunk_images
        group["chunk_done"][short] = 0
        if CHUNK_BYTES in group:
            group[CHUNK_BYTES][short] = 0


def refuse_unfinished_extension(path: Path, record: Mapping[str, Any]) -> None:
    """InvalidInputError when ``record`` (a store's schema record) shows an interrupted extension."""
    target = record.get("extending")
    if target:
        raise InvalidInputError(
            f"feature store {path} was being extended to {target['n_images']} images when it was interrupted; "
            "rerun the same `bddn features` command (same images) to finish it")
