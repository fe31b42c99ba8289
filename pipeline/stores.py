"""Build or bring up to date one feature store: the job behind ``bddn features`` and a sweep's store tasks.

:func:`update_feature_store` takes an image set (:class:`~pipeline.imagesets.union.ImageFiles`,
possibly the union of several subjects' folders), a model request and stage one's config,
and does only the work the store lacks:

- no store: validate every image, create it, extract every chunk;
- a store with the same request and ids: check its chunk files (``--verify``: decode every
  chunk), re-extract damaged chunks and images whose file content changed; else nothing;
- a store with the same request whose ids are a leading part of the requested ones (images
  added to a set): extend it (``cache.extend``) and extract only the new rows;
- a store built from a different request: StoreMismatchError, unless ``overwrite``.

:func:`check_subject_images` is the fit's side of the same contract: a subject is fitted only on
the images whose features the store holds, compared by content digest under each id.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from cache.errors import InvalidInputError
from cache.extend import extend_store
from cache.folder import SHOWN, probe_store
from cache.integrity import damaged_chunks
from cache.jsondata import to_json_data
from cache.schema import SCHEMA_KEY
from cache.store import FeatureStore
from pipeline.imagesets.folder import RENAME_HINT, FolderImageLoader, file_digests, validate_images
from pipeline.imagesets.union import ImageFiles, gather_images, ordered_source
from pipeline.subjects.assemble import subject_label
from pipeline.subjects.locate import IMAGE_FOLDER_KINDS, subject_image_folders
from stages.features.extract import ExtractConfig, extract_features, store_layout, store_provenance
from stages.features.image_source import ImageSource
from stages.features.scaleout import extract_features_distributed
from stages.models.registry import ModelRequest


@dataclass(frozen=True)
class StoreUpdate:
    """What :func:`update_feature_store` did.

    Attributes:
        path: the store.
        n_images: images the store holds now.
        added: images appended to an existing store.
        chunks_computed: chunks extracted by this call (0: the store was up to date).
        summary: one human-readable line (the extraction report, or why nothing was done).
    """

    path: Path
    n_images: int
    added: int
    chunks_computed: int
    summary: str


def stored_ids(path: Path) -> list[str]:
    """The ids a ready store holds (its recorded count, so an interrupted extension's tail is left out)."""
    group = zarr.open_group(path, mode="r")
    count = int(group.attrs[SCHEMA_KEY]["n_images"])
    return [str(value) for value in group["image_id"][:count].tolist()]


def update_feature_store(path: Path, files: ImageFiles, request: ModelRequest, cfg: ExtractConfig, *,
                         imageset: str, run: dict[str, Any] | None = None, verify: bool = False,
                         overwrite: bool = False, client: Any = None, progress: bool = False) -> StoreUpdate:
    """Make the store at ``path`` hold ``request``'s features of every image in ``files`` (see module doc).

    ``client``: a dask.distributed client to spread chunks over (None: this process).
    ``run``: extra settings recorded in the provenance's ``run`` entry (workers, scheduler...).
    """
    workers = max(1, cfg.decode_workers)
    reusable = path.exists() and not overwrite and probe_store(path) == "ready"
    held = stored_ids(path) if reusable else []
    images = ordered_source(files, held)
    model = request.load()
    run_record = {"imageset": imageset, "image_sources": list(files.sources), "config": to_json_data(cfg), **(run or {})}
    provenance = store_provenance(model, images, cfg, seed=None if request.pretrained else request.seed, run=run_record)
    create = functools.partial(FeatureStore.create, path, image_ids=images.image_ids, layout=store_layout(model, cfg),
                               provenance=provenance, overwrite=overwrite)
    digests = file_digests([Path(name) for name in images.names], workers=workers)
    added: list[str] = []
    if reusable:
        n_stored = len(held)
        if len(images) > n_stored:
            validate_images(_tail(images, n_stored), workers=workers)
            added = extend_store(path, image_ids=images.image_ids, provenance=provenance)
            print(f"features: {len(added)} new image(s) extend {path} ({n_stored} -> {len(images)})", file=sys.stderr)
        existing = create()   # reopens a matching store, else raises StoreMismatchError
        _reopen_changed_images(existing, images.names, digests)
        if existing.is_complete():
            damaged = damaged_chunks(existing, full=verify)
            if not damaged:
                if existing.image_digests() is None:   # a store from before digests were kept: start keeping them
                    existing.record_image_digests(digests)
                checked = "every chunk decoded and finite" if verify else "every chunk file present"
                return StoreUpdate(path, len(images), 0, 0, f"up to date ({len(images)} images; {checked})")
            first = next(iter(damaged.items()))
            print(f"features: {len(damaged)} damaged chunk(s) of {path} will be extracted again "
                  f"(chunks {list(damaged)[:SHOWN]}; chunk {first[0]}: {first[1]})", file=sys.stderr)
            existing.reopen_chunks(list(damaged))
    if not added:
        validate_images(images, workers=workers)  # every file decodes, before any store is made
    store = create()
    store.record_image_digests(digests)
    pending = len(store.pending_chunks())
    print(f"features: {request.name} on {len(images)} images ({imageset}), {pending}/{store.n_chunks} chunks to "
          f"compute -> {store.path}", file=sys.stderr)
    if client is None:
        report = extract_features(model, images, store, cfg, progress=progress)
    else:
        report = extract_features_distributed(request, images, store, cfg, client=client, progress=progress)
    return StoreUpdate(path, len(images), len(added), pending, str(report))


def _tail(images: ImageSource, start: int) -> ImageSource:
    """The images from row ``start`` on (the ones an extension adds), for validation."""
    paths = images.names[start:]
    return ImageSource(image_ids=images.image_ids[start:], load=FolderImageLoader([Path(p) for p in paths]),
                       decoding=images.decoding, names=paths)


def _reopen_changed_images(store: FeatureStore, names: tuple[str, ...], digests: list[str]) -> None:
    """Images whose file content changed since their features were extracted: their chunks are computed again."""
    changed = store.changed_rows(digests)
    if not changed.size:
        return
    chunks = sorted({int(row) // store.chunk_images for row in changed})
    shown = ", ".join(Path(names[row]).name for row in changed[:SHOWN])
    print(f"features: {changed.size} image(s) changed since their features were extracted ({shown}); their "
          f"{len(chunks)} chunk(s) of {store.path} will be extracted again", file=sys.stderr)
    store.reopen_chunks(chunks)


def check_subject_images(store: FeatureStore, *, data: str, subject: int | str, root: Path) -> None:
    """Refuse to fit ``subject`` on ``store`` when one of its image files differs in content from the image the
    store extracted under the same id (another subject's photo with that name, or a file changed since): its
    features would be another image's.

    Compares the SHA-256 of each of the subject's image files (``pipeline.subjects.locate``) that the store holds
    with the digest the store recorded. Nothing to compare for data kept outside image files (NSD's HDF5) or in a
    store made before digests were recorded. Raises InvalidInputError naming the file, the id and the store.
    """
    recorded = store.image_digests()
    if recorded is None or data not in IMAGE_FOLDER_KINDS:
        return
    files = gather_images(subject_image_folders(data, subject, root))
    row_of = {image_id: row for row, image_id in enumerate(store.image_ids.tolist())}
    held = [(row_of[image_id], path) for image_id, path in zip(files.image_ids, files.paths) if image_id in row_of]
    now = recorded.astype(object)
    now[[row for row, _ in held]] = file_digests([path for _, path in held])
    changed = set(store.changed_rows(now).tolist())
    clashes = [(row, path) for row, path in held if row in changed]
    if clashes:
        row, path = clashes[0]
        more = f" ({len(clashes) - 1} more like it)" if len(clashes) > 1 else ""
        raise InvalidInputError(
            f"{subject_label(subject)}'s image {path} (id {store.image_ids[row]}) is not the image feature store "
            f"{store.path} extracted under that id{more}; one id must mean one image: if the file changed, rerun "
            f"`bddn features` on the store's images to extract it again; if it is another photo, {RENAME_HINT}")
