"""From a PIL image to a model's normalised input tensor, and the preprocessing presets.

Each model carries its own :class:`Preprocessing` (its mean/std, input size and
interpolation). Geometry policy (ours): the whole stimulus stays in view. Classification
pipelines resize to 256 and centre-crop 224, which would cut away an eighth of a
stimulus the subject saw; here images are resized to the input size directly
(``squash``; for the square NSD/Algonauts stimuli this is exactly the processors' own
resize-then-crop without the crop margin). SAM keeps its native ``longest_pad``.
The reference preset (ImageNet mean/std, 224 squash, bicubic) is :func:`reference_preprocessing`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cache.errors import InvalidInputError
from stages.models.base import Preprocessing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

RESIZE_MODES = ("squash", "shorter_crop", "longest_pad")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def reference_preprocessing(size: int = 224) -> Preprocessing:
    """The published reference's input transform: ImageNet mean/std, squash to ``size``, bicubic.

    ``size`` is 224 for every model except SAM, whose fixed position embedding needs 1024.
    """
    return Preprocessing(size=(size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="squash", interpolation="bicubic")


def image_to_tensor(image: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """Float32 tensor of shape (3, height, width) with ``prep.size``, normalised by ``prep.mean``/``prep.std``.

    Non-RGB images (grayscale, palette, RGBA, CMYK) are converted with PIL's ``convert("RGB")``.
    """
    if prep.resize not in RESIZE_MODES:
        raise InvalidInputError(f"preprocessing resize mode {prep.resize!r}; allowed: {', '.join(RESIZE_MODES)}")
    if prep.interpolation not in _RESAMPLE:
        raise InvalidInputError(f"preprocessing interpolation {prep.interpolation!r}; allowed: {', '.join(_RESAMPLE)}")
    if image.mode != "RGB":
        image = image.convert("RGB")
    height, width = prep.size
    resample = _RESAMPLE[prep.interpolation]
    if prep.resize == "squash":
        image = image.resize((width, height), resample)
    elif prep.resize == "shorter_crop":
        scale = max(height / image.height, width / image.width)
        image = _scaled(image, scale, resample)
        left = int(round((image.width - width) / 2))
        top = int(round((image.height - height) / 2))
        image = image.crop((left, top, left + width, top + height))
    else:
        image = _scaled(image, min(height / image.height, width / image.width), resample)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(3, 1, 1)
    pixels = (pixels - mean) / std
    if prep.resize == "longest_pad":
        padded = torch.zeros(3, height, width, dtype=torch.float32)
        padded[:, : pixels.shape[1], : pixels.shape[2]] = pixels
        pixels = padded
    return pixels.contiguous()


def _scaled(image: Image.Image, scale: float, resample: Image.Resampling) -> Image.Image:
    """``image`` resized by ``scale`` (each side rounded, at least one pixel)."""
    size = (max(1, int(round(image.width * scale))), max(1, int(round(image.height * scale))))
    return image.resize(size, resample)
