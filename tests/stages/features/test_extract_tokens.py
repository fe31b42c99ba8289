"""Token resizing to the store grids against independent implementations (numpy bilinear, PIL's filter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stages.models.base import LayerTokens
from stages.features.token_grids import resize_tokens, tokens_to_numpy


def _bilinear_half_pixel(values: np.ndarray, size: int) -> np.ndarray:
    """Plain bilinear with half-pixel centres (align_corners=False), edges clamped; (h, w) -> (size, size)."""
    height, width = values.shape

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centre = (np.arange(size) + 0.5) * n_in / size - 0.5
        centre = np.clip(centre, 0, None)
        low = np.minimum(np.floor(centre).astype(int), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, centre - low

    y0, y1, fy = axis(height)
    x0, x1, fx = axis(width)
    top = values[y0][:, x0] * (1 - fx) + values[y0][:, x1] * fx
    bottom = values[y1][:, x0] * (1 - fx) + values[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


@pytest.mark.parametrize("source, grid", [(14, 8), (7, 8), (16, 8), (3, 5)])
def test_plain_bilinear_matches_numpy(source: int, grid: int) -> None:
    values = np.random.default_rng(source).normal(size=(2, 3, source, source)).astype(np.float32)
    got = resize_tokens(torch.from_numpy(values), grid, antialias=False).numpy()
    for image in range(2):
        for channel in range(3):
            np.testing.assert_allclose(got[image, channel], _bilinear_half_pixel(values[image, channel], grid),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source, grid", [(112, 8), (28, 8), (14, 8)])
def test_antialiased_shrink_matches_pil_bilinear(source: int, grid: int) -> None:
    values = np.random.default_rng(source).normal(size=(1, 2, source, source)).astype(np.float32)
    got = resize_tokens(torch.from_numpy(values), grid, antialias=True).numpy()
    for channel in range(2):
        expected = np.asarray(Image.fromarray(values[0, channel], mode="F").resize((grid, grid), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(got[0, channel], expected, rtol=1e-4, atol=1e-4)


def test_antialias_uses_every_source_token() -> None:
    values = torch.zeros(1, 1, 112, 112)
    values[0, 0, 3, 3] = 1.0  # a token plain bilinear never samples (sample points sit at 6.5, 20.5, ...)
    assert resize_tokens(values, 8, antialias=False).abs().max() == 0
    assert resize_tokens(values, 8, antialias=True).abs().max() > 0


def test_growing_or_equal_grids_ignore_antialias() -> None:
    values = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(resize_tokens(values, 8, antialias=True), resize_tokens(values, 8, antialias=False))
    torch.testing.assert_close(resize_tokens(values, 7, antialias=True), values)


def test_tokens_to_numpy_shapes_and_dtype() -> None:
    layers = [LayerTokens(local=torch.randn(3, 4, 14, 14, dtype=torch.bfloat16), global_=torch.randn(3, 4)),
              LayerTokens(local=torch.randn(3, 6, 7, 7), global_=torch.randn(3, 6))]
    local, global_ = tokens_to_numpy(layers, (16, 8), antialias=True, dtype="float16")
    assert [a.shape for a in local[16]] == [(3, 4, 16, 16), (3, 6, 16, 16)]
    assert [a.shape for a in local[8]] == [(3, 4, 8, 8), (3, 6, 8, 8)]
    assert [a.shape for a in global_] == [(3, 4), (3, 6)]
    assert all(a.dtype == np.float16 for a in [*local[16], *local[8], *global_])
    np.testing.assert_array_equal(global_[1], layers[1].global_.half().numpy())
