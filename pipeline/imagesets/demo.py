"""The embedded demo image set: seeded variations of the real photos shipped inside installed packages.

No image data set can be downloaded here, so the demo set is derived from the colour
and grey photos that scikit-image (``skimage.data``), scikit-learn (sample images)
and matplotlib (sample data) carry. Image ``i`` is drawn with its own generator
``numpy.random.default_rng([seed, i])``: pick a source photo, a random square-ish
crop (a quarter to all of the shorter side, aspect 3:4..4:3), resize to ``size`` x
``size``, maybe mirror it, then jitter brightness, contrast, saturation and hue
(and turn one in ten grey). The set is therefore deterministic per (seed, size,
index) and independent of ``count``: a larger set extends a smaller one.

Files are ``demo-00000.png`` ...; ``manifest.json``, written last, records every
image's source, crop box and transforms plus the generator's parameters. A rerun
whose manifest matches (same parameters, every file present with its recorded
SHA-256) does nothing.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from cache.errors import InvalidInputError

GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEFAULT_COUNT = 1200
DEFAULT_SIZE = 256


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()
    return load


def _motorcycle(side: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return skimage.data.stereo_motorcycle()[side]
    return load


def _sklearn(file_name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(file_name)
    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


#: Source photos by name -> loader returning uint8 (H, W, 3) or (H, W).
SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "skimage/astronaut": _skimage("astronaut"),
    "skimage/chelsea": _skimage("chelsea"),
    "skimage/coffee": _skimage("coffee"),
    "skimage/rocket": _skimage("rocket"),
    "skimage/motorcycle_left": _motorcycle(0),
    "skimage/motorcycle_right": _motorcycle(1),
    "skimage/hubble_deep_field": _skimage("hubble_deep_field"),
    "skimage/retina": _skimage("retina"),
    "skimage/immunohistochemistry": _skimage("immunohistochemistry"),
    "skimage/camera": _skimage("camera"),
    "skimage/moon": _skimage("moon"),
    "sklearn/china": _sklearn("china.jpg"),
    "sklearn/flower": _sklearn("flower.jpg"),
    "matplotlib/grace_hopper": _grace_hopper,
}


@dataclass(frozen=True)
class DemoImageSet:
    """What :func:`write_demo_images` produced: the folder, file names and whether anything was written."""

    folder: Path
    files: tuple[str, ...]
    generated: bool


def demo_file_name(index: int) -> str:
    """``demo-00042.png`` for index 42 (the stable id ``demo-00042`` comes from it)."""
    return f"demo-{index:05d}.png"


def write_demo_images(folder: Path, *, count: int = DEFAULT_COUNT, seed: int = 0, size: int = DEFAULT_SIZE,
                      workers: int = 2) -> DemoImageSet:
    """Write ``count`` demo PNGs of ``size`` x ``size`` pixels and a manifest into ``folder``.

    Does nothing when the folder's manifest already matches (see the module docstring).
    Other ``demo-*.png`` files in the folder (from a larger earlier set) are removed.
    """
    if count < 1 or size < 32:
        raise InvalidInputError(f"demo images: count must be >= 1 and size >= 32, got count={count}, size={size}")
    folder = Path(folder)
    parameters = {"generator_version": GENERATOR_VERSION, "seed": seed, "count": count, "size": size,
                  "sources": sorted(SOURCES)}
    files = tuple(demo_file_name(index) for index in range(count))
    if _manifest_matches(folder, parameters):
        return DemoImageSet(folder=folder, files=files, generated=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    photos = {name: _as_rgb(load()) for name, load in SOURCES.items()}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        records = list(pool.map(lambda index: _write_one(folder, index, photos, seed=seed, size=size), range(count)))
    wanted = set(files)
    for stale in folder.glob("demo-*.png"):
        if stale.name not in wanted:
            stale.unlink()
    manifest = {**parameters, "sources": {name: list(photo.shape) for name, photo in photos.items()}, "images": records}
    partial = folder / (MANIFEST_NAME + ".partial")
    partial.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    partial.replace(folder / MANIFEST_NAME)
    return DemoImageSet(folder=folder, files=files, generated=True)


def _manifest_matches(folder: Path, parameters: dict[str, Any]) -> bool:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    recorded = {key: manifest.get(key) for key in parameters}
    recorded["sources"] = sorted(manifest.get("sources") or {})
    if recorded != parameters or len(manifest.get("images", ())) != parameters["count"]:
        return False
    for record in manifest["images"]:
        image = folder / record["file"]
        if not image.is_file() or hashlib.sha256(image.read_bytes()).hexdigest() != record["sha256"]:
            return False
    return True


def _as_rgb(photo: np.ndarray) -> np.ndarray:
    photo = np.asarray(photo)
    if photo.ndim == 2:
        photo = np.repeat(photo[:, :, None], 3, axis=2)
    return np.ascontiguousarray(photo[:, :, :3], dtype=np.uint8)


def _write_one(folder: Path, index: int, photos: dict[str, np.ndarray], *, seed: int, size: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, index])
    names = sorted(photos)
    source = names[int(rng.integers(len(names)))]
    photo = photos[source]
    height, width = photo.shape[:2]
    side = rng.uniform(0.25, 1.0) * min(height, width)
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    crop_w = int(min(width, round(side * np.sqrt(aspect))))
    crop_h = int(min(height, round(side / np.sqrt(aspect))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    box = (left, top, left + crop_w, top + crop_h)
    image = Image.fromarray(photo).resize((size, size), Image.Resampling.BICUBIC, box=box)
    flip = bool(rng.random() < 0.5)
    jitter = {"brightness": float(rng.uniform(0.7, 1.3)), "contrast": float(rng.uniform(0.7, 1.3)),
              "saturation": float(rng.uniform(0.5, 1.5)), "hue_shift": float(rng.uniform(-0.08, 0.08)),
              "grey": bool(rng.random() < 0.1)}
    pixels = _jitter_colours(np.asarray(image, dtype=np.float32) / 255.0, **jitter)
    if flip:
        pixels = pixels[:, ::-1]
    name = demo_file_name(index)
    out = Image.fromarray(np.rint(pixels * 255.0).astype(np.uint8), mode="RGB")
    out.save(folder / name, format="PNG", compress_level=1)
    return {"file": name, "image_id": name.removesuffix(".png"), "source": source, "crop_box": list(box),
            "flip_horizontal": flip, **jitter, "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}


def _jitter_colours(pixels: np.ndarray, *, brightness: float, contrast: float, saturation: float,
                    hue_shift: float, grey: bool) -> np.ndarray:
    """Colour changes on float RGB in 0..1, array of shape (size, size, 3); returns the same shape, clipped."""
    luma_weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    pixels = pixels * brightness
    mean = float((pixels @ luma_weights).mean())
    pixels = (pixels - mean) * contrast + mean
    luma = (pixels @ luma_weights)[:, :, None]
    pixels = luma + (pixels - luma) * (0.0 if grey else saturation)
    if hue_shift and not grey:
        pixels = _rotate_hue(pixels, hue_shift * 2 * np.pi)
    return np.clip(pixels, 0.0, 1.0)


def _rotate_hue(pixels: np.ndarray, angle: float) -> np.ndarray:
    """Rotate colours about the grey axis by ``angle`` radians (keeps luminance roughly fixed)."""
    axis = np.ones(3, dtype=np.float32) / np.sqrt(3.0)
    cos, sin = np.cos(angle), np.sin(angle)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=np.float32)
    rotation = cos * np.eye(3, dtype=np.float32) + sin * cross + (1 - cos) * np.outer(axis, axis)
    return pixels @ rotation.T.astype(np.float32)
