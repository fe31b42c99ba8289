"""The image set that stage one consumes: stable ids plus a picklable loader.

Stage one never sees folders or file names. ``pipeline/`` builds an
:class:`ImageSource` from wherever the images live (a folder, the demo set) and
hands it over; the loader must be picklable (a module-level class or function)
so decoding can run in background threads, worker processes or dask workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image


@dataclass(frozen=True)
class ImageSource:
    """Images keyed by stable id, decoded on demand.

    Attributes:
        image_ids: one stable stimulus id per image, in store-row order.
        load: ``load(index) -> PIL.Image.Image`` in mode ``"RGB"`` (8 bits per channel) for
            ``0 <= index < len(image_ids)``; raises :class:`cache.errors.InvalidInputError`
            naming the file when the image cannot be decoded. Must be picklable.
        decoding: JSON-ready record of how files became RGB 8-bit pixels (for provenance).
        names: one human-readable name per image (its file name), or empty.
    """

    image_ids: tuple[str, ...]
    load: Callable[[int], Image.Image]
    decoding: dict[str, Any] = field(default_factory=dict)
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.image_ids)
