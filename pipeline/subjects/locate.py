"""Where a subject's files and stimuli live, without reading its responses.

A sweep needs two things per subject before any fit: the image folders its stimuli are
in (to build one feature store per model over the union of the subjects' images) and a
cheap fingerprint of its files (to tell whether a finished fit still matches its data).

- ``algonauts`` / ``synthetic``: ``<root>/subjNN/training_split/training_images``, plus
  ``test_split/test_images`` when the test split has fMRI (the reader uses them then);
  synthetic subjects live in ``<run root>/synthetic/subjNN``;
- ``generic``: ``<root>/<subject>/images``;
- ``nsd``: the stimuli are in one HDF5 file, not image files: pass them to the sweep as
  an image folder or list whose file names carry the ids (``..._nsd-00013.png``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cache.errors import InvalidInputError, MissingInputError
from pipeline.runroot import synthetic_root
from pipeline.subjects.assemble import subject_label

#: Data kinds whose subjects keep their stimuli as image files in their own folder.
IMAGE_FOLDER_KINDS = ("algonauts", "synthetic", "generic")


def subject_folder(data: str, subject: int | str, root: Path) -> Path:
    """The folder holding one subject's files (for ``nsd``: its betas folder)."""
    name = subject_label(subject)
    if data == "synthetic":
        return synthetic_root(Path(root)) / name
    if data == "nsd":
        return Path(root) / "nsddata_betas" / "ppdata" / name
    return Path(root) / name


def subject_image_folders(data: str, subject: int | str, root: Path) -> list[Path]:
    """The folders holding a subject's stimuli (see module doc); MissingInputError naming the folder and the fix."""
    if data not in IMAGE_FOLDER_KINDS:
        raise InvalidInputError(f"{data} subjects keep no image files per subject; pass the stimuli as --images "
                                "folders or --image-list files whose names carry the ids (..._nsd-00013.png)")
    folder = subject_folder(data, subject, root)
    if not folder.is_dir():
        hint = "run `bddn synth --subjects N` (or `make synth`) first" if data == "synthetic" else "check --root"
        raise MissingInputError(f"subject folder {folder} does not exist; {hint}")
    if data == "generic":
        return [folder / "images"]
    folders = [folder / "training_split" / "training_images"]
    if (folder / "test_split" / "test_fmri").is_dir():
        folders.append(folder / "test_split" / "test_images")
    return folders


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over every file below ``folder``: relative path, size and modification time (no content read).

    Changes when a file is added, removed, replaced or rewritten; cheap enough to run on every sweep.
    """
    folder = Path(folder)
    if not folder.exists():
        raise MissingInputError(f"{folder} does not exist")
    digest = hashlib.sha256()
    for directory, names, files in os.walk(folder):
        names.sort()
        for name in sorted(files):
            path = Path(directory) / name
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
