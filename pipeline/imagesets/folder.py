"""Image folders: listing, stable ids, and the decoding policy every model shares.

Listing
    Every regular file directly inside the folder whose suffix is an image suffix
    (``IMAGE_SUFFIXES``, any case), hidden files (``.*``) skipped, sorted by file
    name (the order Algonauts rows follow). Sub-folders are not entered; other files
    (a manifest, notes) are ignored. A listed file that is not a readable image is
    an error, never skipped.

Stable ids (:func:`stable_image_id`)
    ``nsd-00013`` / ``demo-00042`` when the stem ends in ``nsd-<digits>`` or
    ``demo-<digits>`` (after ``_`` or at the start), else ``sha256-`` + the first
    16 hex digits of the file's SHA-256. Files sharing an id are one stimulus when
    their content is the same: the first in sorted order is kept, the others are
    reported and skipped. Files sharing an id with different content are refused
    (:func:`refuse_different_images`): one id means one image.

Decoding policy (:func:`decode_image`, version ``DECODING_POLICY["version"]``)
    The same for every model, recorded in each store's provenance:

    - the first frame of multi-frame files (GIF, TIFF);
    - EXIF orientation applied (the image as viewers show it);
    - embedded ICC colour profiles ignored: pixel values are taken as sRGB;
    - RGB kept; L and 1 (grey, bilevel) replicated to three channels;
    - alpha (RGBA, LA, La, RGBa, PA, palettes with transparency) composited onto
      opaque **white** (255, 255, 255), like a browser's default page;
    - P (palette) expanded through its palette;
    - CMYK, YCbCr, LAB, HSV converted by Pillow's standard ``convert("RGB")``;
    - 16-bit and 32-bit integer grey (I;16, I;16B, I;16L, I) clipped to 0..65535
      and scaled to 8 bits by ``round(v / 257)`` (so 65535 -> 255, and 8-bit data
      stored in 16 bits comes back exactly); 16-bit RGB(A) PNGs are reduced to 8
      bits by Pillow on opening;
    - refused: floating-point images (mode F), images with a side under
      ``MIN_SIDE`` pixels, zero-byte, truncated or unreadable files, non-images.

Validation (:func:`validate_images`) fully decodes every file (in threads)
*before* any store is created, and raises one :class:`~cache.errors.InvalidInputError`
listing every bad file with its problem. Decoding errors that appear later (a file
changed during extraction) are caught per chunk by stage one, which never marks
such a chunk complete.
"""

from __future__ import annotations

import logging
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cache.errors import InvalidInputError, MissingInputError
from cache.folder import SHOWN
from cache.provenance import hash_file
from stages.features.image_source import ImageSource

log = logging.getLogger(__name__)

#: Smallest accepted image side in pixels: smaller images carry too little for a 224 px model input.
MIN_SIDE = 16
#: The policy as recorded in provenance; bump ``version`` whenever decoding changes pixels.
DECODING_POLICY = {
    "version": 1,
    "output": "RGB, 8 bits per channel",
    "frames": "first",
    "exif_orientation": "applied",
    "icc_profile": "ignored (values taken as sRGB)",
    "alpha": "composited onto white (255, 255, 255)",
    "grey": "replicated to 3 channels",
    "palette": "expanded",
    "cmyk_ycbcr_lab_hsv": "PIL convert('RGB')",
    "integer_16_32_bit": "clip 0..65535, round(v / 257)",
    "min_side": MIN_SIDE,
}
#: How to give one of two different images that share an id its own id (the end of the errors refusing them).
RENAME_HINT = ("rename one of the files so that its name carries an id no other image has (e.g. "
               "..._nsd-<unused number>.png), or drop the nsd-/demo- number from its name so that its id comes from "
               "its content")
#: File suffixes listed as images (compared lower-case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
_ID_PATTERN = re.compile(r"(?:^|_)(nsd|demo)-(\d+)$")
_ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
_INTEGER_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def list_image_files(folder: Path) -> list[Path]:
    """Every non-hidden file with an image suffix directly inside ``folder``, sorted by name.

    Raises MissingInputError when the folder does not exist and InvalidInputError when it
    holds no such files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"image folder {folder} does not exist (or is not a folder); "
                                "pass an existing folder of images, or run `bddn demo-images` for the demo set")
    named = [path for path in folder.iterdir() if not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES]
    files = sorted((path for path in named if path.is_file()), key=lambda path: path.name)
    skipped = sorted(path.name for path in named if not path.is_file())
    if skipped:   # dangling or looping links, folders named like images
        log.warning("image folder %s: skipped %d entr%s named like images that are not readable files "
                    "(dangling links, link loops or folders): %s", folder, len(skipped),
                    "y" if len(skipped) == 1 else "ies", ", ".join(skipped[:SHOWN]))
    if not files:
        raise InvalidInputError(f"image folder {folder} holds no image files (suffixes {', '.join(IMAGE_SUFFIXES)}); "
                                "put the images directly inside it")
    return files


def stable_image_id(path: Path) -> str:
    """The stimulus id of an image file: ``nsd-00013`` / ``demo-00042`` from its name, else a content hash.

    ``train-0001_nsd-00013.png`` -> ``"nsd-00013"``; ``demo-00042.png`` -> ``"demo-00042"``;
    ``cat.jpg`` -> ``"sha256-"`` + the first 16 hex digits of the file's SHA-256.
    """
    path = Path(path)
    match = _ID_PATTERN.search(path.stem)
    if match:
        return f"{match.group(1)}-{int(match.group(2)):05d}"
    return "sha256-" + file_digest(path)[len("sha256:"):][:16]


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes: an image's content identity (its id when its name carries none, and
    the store's record of what was extracted).

    Raises InvalidInputError naming the file when it cannot be read.
    """
    try:
        return "sha256:" + hash_file(str(path))
    except OSError as error:
        raise InvalidInputError(f"image {path} cannot be read ({error.strerror or error}); fix its permissions or "
                                "remove it from the folder") from error


def file_digests(paths: Sequence[Path], *, workers: int = 2) -> list[str]:
    """:func:`file_digest` of every path, in order (hashed in ``workers`` threads: hashlib releases the GIL)."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(file_digest, paths))


def refuse_different_images(repeats: Sequence[tuple[str, Path, Path]], *, workers: int = 2) -> None:
    """Refuse files that share a stable id but not their content.

    ``repeats``: ``(image id, first file, later file)`` for every file whose id an earlier file already has.
    A repeated id is one stimulus, extracted once; were the two files different photos, one would be dropped
    and its subject fitted on the other's features. Raises one InvalidInputError naming the first clash's two
    files and how to rename one. Hard links and files of different sizes are told apart without reading them.
    """
    compared = [(image_id, first, later) for image_id, first, later in repeats if not first.samefile(later)]
    same_size = [(first, later) for _, first, later in compared if first.stat().st_size == later.stat().st_size]
    paths = list(dict.fromkeys(path for pair in same_size for path in pair))
    digest = dict(zip(paths, file_digests(paths, workers=workers)))
    clashes = [(image_id, first, later) for image_id, first, later in compared
               if first.stat().st_size != later.stat().st_size or digest[first] != digest[later]]
    if not clashes:
        return
    image_id, first, later = clashes[0]
    more = (f" ({len(clashes) - 1} more id(s) like it: {', '.join(clash[0] for clash in clashes[1:SHOWN + 1])})"
            if len(clashes) > 1 else "")
    raise InvalidInputError(f"image id {image_id} names two different images, {first} and {later}{more}; one id "
                            f"must mean one image: {RENAME_HINT}")


def decode_image(path: Path) -> Image.Image:
    """Decode one file into an RGB 8-bit image by the module's decoding policy.

    Raises InvalidInputError naming the file and the problem when the file is empty,
    truncated, not an image, too small or of a refused mode.
    """
    path = Path(path)
    problem = _problem_before_decoding(path)
    if problem:
        raise InvalidInputError(f"{path}: {problem}")
    try:
        with Image.open(path) as image:
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image, path)
    except InvalidInputError:
        raise
    except UnidentifiedImageError:
        raise InvalidInputError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as error:
        raise InvalidInputError(f"{path}: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidInputError(f"{path}: truncated or corrupt image ({error})") from None


class FolderImageLoader:
    """Picklable ``load(index) -> RGB image`` over a fixed list of files (see :class:`ImageSource`)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = tuple(str(path) for path in paths)

    def __call__(self, index: int) -> Image.Image:
        return decode_image(Path(self.paths[index]))


def image_source_from_folder(folder: Path, *, validate: bool = True, workers: int = 2) -> ImageSource:
    """List and identify the images in ``folder``: the :class:`ImageSource` stage one reads.

    With ``validate`` (the default) every image is also decoded once (see
    :func:`validate_images`), so bad input fails before any store is created.
    """
    folder = Path(folder)
    files = list_image_files(folder)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        ids = list(pool.map(stable_image_id, files))
    kept_paths, kept_ids, seen, duplicates, repeats = [], [], {}, [], []
    for path, image_id in zip(files, ids):
        if image_id in seen:
            duplicates.append(f"{path.name} (same id {image_id} as {seen[image_id].name})")
            repeats.append((image_id, seen[image_id], path))
            continue
        seen[image_id] = path
        kept_paths.append(path)
        kept_ids.append(image_id)
    refuse_different_images(repeats, workers=workers)
    if duplicates:
        warnings.warn(f"{folder}: {len(duplicates)} files repeat an earlier image's id and are skipped: "
                      + "; ".join(duplicates), stacklevel=2)
    source = ImageSource(image_ids=tuple(kept_ids), load=FolderImageLoader(kept_paths), decoding=dict(DECODING_POLICY),
                         names=tuple(path.name for path in kept_paths))
    if validate:
        validate_images(source, workers=workers)
    return source


def validate_images(images: ImageSource, *, workers: int = 2) -> None:
    """Decode every image once (``workers`` threads); one InvalidInputError lists every bad file and its problem."""
    def problem(index: int) -> str | None:
        try:
            images.load(index)
        except InvalidInputError as error:
            return str(error)
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:
        bad = [message for message in pool.map(problem, range(len(images))) if message]
    if bad:
        raise InvalidInputError(f"{len(bad)} of {len(images)} images cannot be used (fix or remove them): "
                                + "; ".join(bad))


def _problem_before_decoding(path: Path) -> str | None:
    if not path.is_file():
        return "file does not exist"
    if path.stat().st_size == 0:
        return "empty file (zero bytes)"
    return None


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    if min(image.size) < MIN_SIDE:
        raise InvalidInputError(f"{path}: image is {image.width}x{image.height} px, "
                                f"below the minimum side of {MIN_SIDE} px")
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _INTEGER_MODES:
        values = np.asarray(image, dtype=np.float64)
        scaled = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "F":
        raise InvalidInputError(f"{path}: floating-point images (mode F) are not supported; "
                                "save it as 8- or 16-bit integer PNG/TIFF")
    return image.convert("RGB")
