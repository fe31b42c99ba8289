"""Whether a sweep task's finished output still matches what the plan asks for.

Each finished task leaves a record in ``<run root>/sweeps/.records/`` (shared by every
sweep, keyed by the task's output, e.g. ``fits__mobilenet_v2__subj01-ridge.json``): the task's *identity*
and a fingerprint of each output. A task is up to date when both still match:

- store task identity: its ``bddn features`` command line and every image file's id, path,
  size and modification time; output: the store's identity record (``FeatureStore.identity``),
  and the store complete;
- fit task identity: its ``bddn fit`` command line, the store's feature identity *without*
  its id list (so extending a store by a new subject's images leaves finished fits of other
  subjects valid: their rows are unchanged), and a fingerprint of each subject's files;
  output: the SHA-256 of each ``fit.json``.

A fit replaced by hand, a store rebuilt, a changed subject file or flag all make the task
run again; nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from cache.errors import BddnError
from cache.provenance import hash_file
from cache.store import FeatureStore
from pipeline.imagesets.union import gather_images
from pipeline.subjects.locate import folder_fingerprint, subject_folder
from pipeline.sweep.plan import Task
from stages.fit.result import FIT_JSON

#: Identity keys that name the store's id list (left out of a fit's view of its store).
_ID_KEYS = ("n_images", "image_ids_sha256")


def digest(value: Any) -> str:
    """SHA-256 of a JSON-ready value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def store_task_identity(task: Task, folders: Sequence[Path], lists: Sequence[Path]) -> str:
    """Identity of a store task: its command line and each image file's id, path, size and mtime."""
    files = gather_images(folders, lists)
    stats = [(image_id, str(path), path.stat().st_size, path.stat().st_mtime_ns)
             for image_id, path in zip(files.image_ids, files.paths)]
    return digest({"argv": task.argv, "images": stats})


def feature_identity(store_path: Path, *, with_ids: bool) -> str | None:
    """Digest of a complete store's identity record (``with_ids=False``: without its id list), None if the store
    is absent, unreadable or unfinished."""
    try:
        store = FeatureStore.open(store_path)
    except BddnError:
        return None
    if not store.is_complete():
        return None
    identity = store.identity()
    if not with_ids:
        identity = {key: value for key, value in identity.items() if key not in _ID_KEYS}
        identity["provenance"] = {key: value for key, value in identity["provenance"].items()
                                  if key != "image_ids_sha256"}
    return digest(identity)


def fit_task_identity(task: Task, store_path: Path, *, data: str, root: Path) -> str | None:
    """Identity of a fit task, or None while its store is not complete (then it must run)."""
    features = feature_identity(store_path, with_ids=False)
    if features is None:
        return None
    subjects = [folder_fingerprint(subject_folder(data, name, root)) for name in task.subjects]
    return digest({"argv": task.argv, "features": features, "subjects": subjects})


def output_fingerprints(task: Task) -> dict[str, str] | None:
    """Fingerprint of each output as it is now, or None when an output is missing or unfinished."""
    prints = {}
    for output in task.outputs:
        if task.kind == "store":
            value = feature_identity(output, with_ids=True)
        else:
            fit_json = output / FIT_JSON
            value = hash_file(str(fit_json)) if fit_json.is_file() else None
        if value is None:
            return None
        prints[str(output)] = value
    return prints


def record_path(records: Path, task: Task) -> Path:
    """The record file of ``task`` in ``records`` (``<run root>/sweeps/.records``), named after the task's first
    output relative to the run root, so sweeps that share an output share its record."""
    where = os.path.relpath(task.outputs[0], records.parent.parent)
    return records / (where.replace(os.sep, "__") + ".json")


def is_up_to_date(records: Path, task: Task, identity: str | None) -> bool:
    """True when ``task``'s record holds ``identity`` and its outputs are unchanged since."""
    path = record_path(records, task)
    if identity is None or not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return record.get("identity") == identity and record.get("outputs") == output_fingerprints(task)


def write_record(records: Path, task: Task, identity: str) -> None:
    """Record ``task`` as finished with ``identity`` and its outputs' current fingerprints (atomic write)."""
    records.mkdir(parents=True, exist_ok=True)
    path = record_path(records, task)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps({"key": task.key, "identity": identity, "outputs": output_fingerprints(task),
                                   "command": task.command}, indent=1))
    partial.replace(path)
