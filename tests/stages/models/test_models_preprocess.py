"""image_to_tensor: sizes, normalisation and geometry of each resize mode, against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cache.errors import InvalidInputError
from stages.models.base import Preprocessing
from stages.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor, reference_preprocessing


def _halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2, 0] = 255
    array[:, width // 2:, 2] = 255
    return Image.fromarray(array)


def test_reference_preset_normalises_like_numpy() -> None:
    prep = reference_preprocessing()
    assert (prep.size, prep.mean, prep.std, prep.resize, prep.interpolation) == (
        (224, 224), IMAGENET_MEAN, IMAGENET_STD, "squash", "bicubic")
    colour = (200, 100, 30)
    pixels = image_to_tensor(Image.new("RGB", (300, 120), colour), prep)
    expected = (np.array(colour) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.float32
    np.testing.assert_allclose(pixels.numpy(), np.broadcast_to(expected[:, None, None], (3, 224, 224)), atol=1e-5)


def test_squash_keeps_the_whole_image_and_crop_cuts_it() -> None:
    image = _halves(400, 100)
    unit = Preprocessing(size=(50, 50), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear")
    squashed = image_to_tensor(image, unit)
    assert squashed[0, :, :20].min() > 0.99 and squashed[2, :, 30:].min() > 0.99  # both halves in view
    cropped = image_to_tensor(image, Preprocessing(**{**unit.to_dict(), "resize": "shorter_crop"}))
    assert cropped.shape == (3, 50, 50)
    np.testing.assert_allclose(cropped[0, :, :20].numpy(), 1.0, atol=1e-6)  # the central 100x100 of a 400x100 image
    np.testing.assert_allclose(cropped[2, :, 30:].numpy(), 1.0, atol=1e-6)
    assert cropped[0, :, 20:30].mean() < 1.0 and cropped[2, :, 20:30].mean() < 1.0


def test_longest_pad_pads_bottom_right_with_zeros_after_normalising() -> None:
    prep = Preprocessing(size=(64, 64), mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="longest_pad", interpolation="bilinear")
    pixels = image_to_tensor(Image.new("RGB", (128, 64), (255, 255, 255)), prep)  # 2:1 -> 64x32 content
    assert pixels.shape == (3, 64, 64)
    expected = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(pixels[:, :32].numpy(), np.broadcast_to(expected[:, None, None], (3, 32, 64)), atol=1e-5)
    assert torch.count_nonzero(pixels[:, 32:]) == 0


def test_non_rgb_images_are_converted() -> None:
    prep = Preprocessing(size=(8, 8), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    gray = image_to_tensor(Image.new("L", (10, 10), 128), prep)
    np.testing.assert_allclose(gray.numpy(), 128 / 255, atol=1e-6)
    rgba = image_to_tensor(Image.new("RGBA", (10, 10), (255, 0, 0, 10)), prep)
    assert rgba.shape == (3, 8, 8) and float(rgba[0].min()) == 1.0


def test_bad_preprocessing_values() -> None:
    image = Image.new("RGB", (4, 4))
    with pytest.raises(InvalidInputError, match="resize mode 'stretch'; allowed: squash, shorter_crop, longest_pad"):
        image_to_tensor(image, Preprocessing(size=(4, 4), mean=(0, 0, 0), std=(1, 1, 1), resize="stretch"))
    with pytest.raises(InvalidInputError, match="interpolation 'nearest'; allowed: bicubic, bilinear"):
        image_to_tensor(image, Preprocessing(size=(4, 4), mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest"))
