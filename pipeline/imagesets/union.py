"""Image sets drawn from several folders or an image list: one stimulus per stable id.

Subjects of one study see overlapping stimuli (NSD's shared 1,000 images; several
Algonauts subjects). A feature store built per model over the *union* of their images
extracts each stimulus once. Images are identified by their stable ids
(:func:`pipeline.imagesets.folder.stable_image_id`: ``nsd-00013`` from the file name, else
a content hash), so the same stimulus under different file names in different folders is
one image: the first occurrence in the order given is kept. Files that share an id must
share their content too: two different photos under one id are refused, naming both
files (:func:`pipeline.imagesets.folder.refuse_different_images`), never one dropped.

An image list is a text file naming one image file per line (relative paths are taken
from the list's folder); blank lines and lines starting with ``#`` are skipped.

:func:`ordered_source` puts the images in a store's row order: the rows a store already
holds first, then the new images (``cache.extend``), so adding a subject later extracts
only the images the store lacks.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cache.errors import InvalidInputError, MissingInputError
from cache.folder import SHOWN
from pipeline.imagesets.folder import (
    DECODING_POLICY, FolderImageLoader, list_image_files, refuse_different_images, stable_image_id,
)
from stages.features.image_source import ImageSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFiles:
    """Image files keyed by stable id, one file per id, in the order first met.

    Attributes:
        image_ids: stable ids, unique.
        paths: the file of each id (absolute).
        sources: the folders and lists the files were gathered from, for provenance.
    """

    image_ids: tuple[str, ...]
    paths: tuple[Path, ...]
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.image_ids)


def read_image_list(path: Path) -> list[Path]:
    """The files named by an image list (one per line; relative to the list's folder; ``#`` comments)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise MissingInputError(f"image list {path} does not exist; pass a text file naming one image file per line")
    files = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        file = Path(entry).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            raise MissingInputError(f"image list {path}, line {number}: {file} is not a file; fix or remove the line")
        files.append(file.resolve())
    if not files:
        raise InvalidInputError(f"image list {path} names no image files; put one path per line")
    return files


def gather_images(folders: Sequence[Path] = (), lists: Sequence[Path] = ()) -> ImageFiles:
    """The union of every folder's images and every list's files, one file per stable id (first kept).

    Raises InvalidInputError when two files share an id but not their content (see module doc).
    """
    groups = [(str(Path(folder).expanduser().resolve()), list_image_files(Path(folder).expanduser().resolve()))
              for folder in folders]
    groups += [(str(Path(listed).expanduser().resolve()), read_image_list(listed)) for listed in lists]
    if not groups:
        raise InvalidInputError("no images given: pass --images DIR [DIR ...] or --image-list FILE")
    kept: dict[str, Path] = {}
    repeats: list[tuple[str, Path, Path]] = []   # (id, first file, later file)
    repeated: dict[str, list[str]] = {}          # source -> its files repeating an id of its own
    for source, files in groups:
        own: set[str] = set()
        for file in files:
            image_id = stable_image_id(file)
            if image_id in own:
                repeated.setdefault(source, []).append(f"{file.name} (same id {image_id} as an earlier file)")
            own.add(image_id)
            if image_id in kept:
                repeats.append((image_id, kept[image_id], file))
                continue
            kept[image_id] = file
    refuse_different_images(repeats)
    for source, names in repeated.items():
        warnings.warn(f"{source}: {len(names)} files repeat an earlier image's id and are skipped: "
                      + "; ".join(names[:SHOWN]), stacklevel=2)
    if repeats:
        log.info("%d image files repeat an id met earlier (the same stimulus); each is extracted once", len(repeats))
    return ImageFiles(image_ids=tuple(kept), paths=tuple(kept.values()), sources=tuple(source for source, _ in groups))


def ordered_source(files: ImageFiles, stored_ids: Sequence[str] = ()) -> ImageSource:
    """The :class:`ImageSource` of ``files`` in store-row order: ``stored_ids`` first, then the rest as given.

    Raises InvalidInputError when the store holds ids that ``files`` lack (a store only gains images).
    """
    position = {image_id: index for index, image_id in enumerate(files.image_ids)}
    missing = [image_id for image_id in stored_ids if image_id not in position]
    if missing:
        raise InvalidInputError(
            f"the feature store holds {len(missing)} images the given folders/lists lack (first: {missing[:SHOWN]}); "
            "pass every folder the image set was built from (new folders extend it), or use another --name")
    stored = set(stored_ids)
    order = [position[image_id] for image_id in stored_ids]
    order += [index for index, image_id in enumerate(files.image_ids) if image_id not in stored]
    paths = [files.paths[index] for index in order]
    return ImageSource(image_ids=tuple(files.image_ids[index] for index in order), load=FolderImageLoader(paths),
                       decoding=dict(DECODING_POLICY), names=tuple(str(path) for path in paths))
