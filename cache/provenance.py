"""Provenance helpers: what produced an output, recorded as plain JSON."""

from __future__ import annotations

import hashlib
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Iterable

_TRACKED_PACKAGES = (
    "bddn", "torch", "torchvision", "timm", "transformers", "zarr", "numcodecs", "dask",
    "distributed", "numpy", "scipy", "scikit-learn", "pyarrow", "nibabel", "nilearn",
    "matplotlib", "pillow", "safetensors",
)


def package_versions(names: Iterable[str] = _TRACKED_PACKAGES) -> dict[str, str]:
    """Installed version of each named distribution (``"absent"`` when not installed)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def environment_record() -> dict[str, object]:
    """Package versions, platform and a UTC timestamp, for every output's provenance."""
    return {
        "packages": package_versions(),
        "platform": platform.platform(),
        "python_executable": sys.executable,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def hash_strings(values: Iterable[str]) -> str:
    """SHA-256 of the given strings joined by newlines: a stable digest of an id list."""
    digest = hashlib.sha256()
    for value in values:
        digest.update(value.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def hash_file(path: str, *, block_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()
