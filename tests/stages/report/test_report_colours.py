"""Colour mappings of the maps: argmax -> hue, entropy -> brightness, space -> constant-lightness square."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from skimage.color import lab2rgb, rgb2lab

from cache.errors import InvalidInputError
from stages.report.colours import (
    SPACE_CHROMA, SPACE_LIGHTNESS, auto_space_extent, cluster_colours, entropy_brightness, lab_to_srgb, layer_colour_bar,
    layer_colours, layer_hue, scalar_colours, space_colour_square, space_colours,
)


def test_argmax_layer_runs_through_coolwarm_from_blue_to_red() -> None:
    hue = layer_hue(np.arange(5), 5)
    expected = colormaps["coolwarm"](np.linspace(0, 1, 5))[:, :3]
    np.testing.assert_allclose(hue, expected)
    assert hue[0, 2] > hue[0, 0] and hue[-1, 0] > hue[-1, 2]  # first blue, last red


def test_entropy_brightness_is_the_reference_formula_clipped() -> None:
    e = np.linspace(0, 1, 11)
    np.testing.assert_allclose(entropy_brightness(e), np.minimum(1 - e**3 + 0.2, 1.0))
    assert entropy_brightness(np.array([1.0]))[0] == pytest.approx(0.2)
    assert np.all(np.diff(entropy_brightness(e)) <= 0)


def test_layer_colours_multiply_hue_by_brightness() -> None:
    argmax = np.array([0, 3, 7, 7])
    entropy = np.array([0.0, 0.5, 0.9, 1.0])
    colours = layer_colours(argmax, entropy, 8)
    expected = np.clip(colormaps["coolwarm"](argmax / 7)[:, :3] * np.minimum(1.2 - entropy**3, 1)[:, None], 0, 1)
    np.testing.assert_allclose(colours, expected)
    # uniform weights darker than one-hot weights of the same layer
    assert colours[3].sum() < colours[2].sum()


def test_layer_colour_bar_has_layers_along_x_and_entropy_along_y() -> None:
    bar = layer_colour_bar(6, n_entropy=16)
    assert bar.shape == (16, 6, 3)
    np.testing.assert_allclose(bar[0], layer_colours(np.arange(6), np.zeros(6), 6))
    assert (bar[-1].sum(axis=1) < bar[0].sum(axis=1)).all()


def test_lab_conversion_matches_skimage() -> None:
    rng = np.random.default_rng(0)
    lab = np.stack([rng.uniform(30, 90, 200), rng.uniform(-20, 20, 200), rng.uniform(-20, 20, 200)], axis=1)
    np.testing.assert_allclose(lab_to_srgb(lab), np.clip(lab2rgb(lab), 0, 1), atol=2e-3)


def test_space_square_has_constant_lightness_and_is_in_gamut() -> None:
    square = space_colour_square(33)
    lab = rgb2lab(square)
    np.testing.assert_allclose(lab[..., 0], SPACE_LIGHTNESS, atol=0.3)
    coords = np.linspace(-1, 1, 33)
    np.testing.assert_allclose(lab[..., 1], np.broadcast_to(SPACE_CHROMA * coords[None, :], (33, 33)), atol=0.5)   # x -> a*
    np.testing.assert_allclose(lab[..., 2], np.broadcast_to(-SPACE_CHROMA * coords[:, None], (33, 33)), atol=0.5)  # y (down) -> -b*
    assert square.min() > 0.0 and square.max() < 1.0  # nothing clipped: inside sRGB


def test_space_colours_tell_image_corners_apart() -> None:
    corners = space_colours(np.array([-1, 1, -1, 1, 0]), np.array([-1, -1, 1, 1, 0]))
    distances = np.linalg.norm(rgb2lab(corners[None])[0][:, None] - rgb2lab(corners[None])[0][None], axis=-1)
    assert distances[np.triu_indices(5, 1)].min() > 20


def test_scalar_colours_make_nan_transparent() -> None:
    rgba = scalar_colours(np.array([0.0, 0.5, np.nan]), cmap="Reds", vmin=0, vmax=1)
    assert rgba.shape == (3, 4)
    assert rgba[2, 3] == 0 and rgba[0, 3] == 1
    np.testing.assert_allclose(rgba[1], colormaps["Reds"](0.5))


def test_cluster_colours_are_tab20() -> None:
    np.testing.assert_allclose(cluster_colours(np.array([0, 19, 20])), np.asarray(colormaps["tab20"].colors)[[0, 19, 0]])


def test_layer_hue_rejects_zero_layers() -> None:
    with pytest.raises(InvalidInputError, match="n_layers"):
        layer_hue(np.array([0]), 0)


def test_space_extent_stretches_the_colour_square_onto_the_image_centre() -> None:
    inner = space_colours(np.array([0.3, -0.3, 0.0]), np.array([0.0, 0.3, -0.3]), extent=0.3)
    whole = space_colours(np.array([1.0, -1.0, 0.0]), np.array([0.0, 1.0, -1.0]))
    np.testing.assert_allclose(inner, whole)
    beyond = space_colours(np.array([0.9]), np.array([0.0]), extent=0.3)
    np.testing.assert_allclose(beyond, space_colours(np.array([1.0]), np.array([0.0])))  # edge colour
    with pytest.raises(InvalidInputError, match="space extent"):
        space_colours(np.zeros(1), np.zeros(1), extent=0.0)


def test_auto_space_extent_covers_the_points_of_every_fit() -> None:
    rng = np.random.default_rng(0)
    foveal = (rng.uniform(-0.2, 0.2, 1000), rng.uniform(-0.2, 0.2, 1000))
    assert auto_space_extent([foveal]) == pytest.approx(0.2)
    wider = (np.linspace(-0.6, 0.6, 1000), np.zeros(1000))
    assert auto_space_extent([wider]) == pytest.approx(0.55)                  # 90th percentile 0.54, rounded up
    assert auto_space_extent([foveal, wider]) == pytest.approx(0.5)           # one extent for fits drawn together
    no_point = (np.full(10, np.nan), np.full(10, np.nan))                      # ridge: no sample point
    assert auto_space_extent([no_point]) == 1.0
    assert auto_space_extent([(np.zeros(5), np.zeros(5))]) == pytest.approx(0.1)  # never below the minimum
