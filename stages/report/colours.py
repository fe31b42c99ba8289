"""Colour mappings of the maps in method.md (stage three): per-vertex selections -> RGBA.

* Layer map: hue = argmax layer through ``coolwarm`` (blue early, red late), brightness
  multiplied by ``1 - e**3 + 0.2`` where ``e`` is the normalised entropy of the layer
  weights (0 one-hot .. 1 uniform), clipped to 0..1; a decisive vertex is bright, an
  undecided one dark. Its legend is 2-D: layer along x, entropy along y.
* Space map: the selected image point (x, y) in [-1, 1]^2 looked up in a colour square of
  constant CIELAB lightness, so that position is coded by hue/chroma alone and no image
  region looks more "important" than another. The square may span only the central
  ``[-extent, extent]^2`` of the image (points beyond take the edge colour): receptive
  fields crowd the image centre (cortical magnification), and over the whole image they
  would all look grey. :func:`auto_space_extent` picks one extent for all fits drawn together.
* Scale ``PuOr`` (0 local .. 1 global), scores ``Reds`` (0..1), per-layer weights ``inferno``,
  channel clusters ``tab20``.

Every function returns float arrays in 0..1 and never touches matplotlib's global state.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from cache.errors import InvalidInputError

LAYER_CMAP = "coolwarm"
LAYER_WEIGHT_CMAP = "inferno"
SCALE_CMAP = "PuOr"
SCORE_CMAP = "Reds"
DIFFERENCE_CMAP = "RdBu_r"
CLUSTER_CMAP = "tab20"
CONFIDENCE_CMAP = "viridis"
SET_SIZE_CMAP = "magma_r"
SIGNIFICANCE_CMAP = "YlGnBu"

#: CIELAB lightness of the space colour square and its half-width in a* and b*; the
#: whole square lies inside the sRGB gamut at this lightness (checked by the tests).
SPACE_LIGHTNESS = 70.0
SPACE_CHROMA = 26.0

# CIE D65 reference white and the XYZ -> linear sRGB matrix (IEC 61966-2-1).
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_XYZ_TO_LINEAR_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314],
                                [-0.9692660, 1.8760108, 0.0415560],
                                [0.0556434, -0.2040259, 1.0572252]])


def entropy_brightness(entropy: np.ndarray) -> np.ndarray:
    """Brightness factor ``clip(1 - e**3 + 0.2, 0, 1)`` of normalised entropies ``e`` (any shape)."""
    e = np.clip(np.asarray(entropy, dtype=np.float64), 0.0, 1.0)
    return np.clip(1.0 - e**3 + 0.2, 0.0, 1.0)


def layer_hue(layer_index: np.ndarray, n_layers: int) -> np.ndarray:
    """``coolwarm`` RGB of layer indices, float array of shape (..., 3); layer 0 blue, the last red."""
    if n_layers < 1:
        raise InvalidInputError(f"n_layers must be >= 1, got {n_layers}")
    position = np.asarray(layer_index, dtype=np.float64) / max(n_layers - 1, 1)
    return colormaps[LAYER_CMAP](np.clip(position, 0.0, 1.0))[..., :3]


def layer_colours(layer_argmax: np.ndarray, layer_entropy: np.ndarray, n_layers: int) -> np.ndarray:
    """Layer-map RGB per vertex: argmax hue times entropy brightness.

    Args:
        layer_argmax: int array of shape (n_vertices,), the most-weighted layer.
        layer_entropy: array of shape (n_vertices,), normalised entropy in 0..1.
        n_layers: number of layers of the model (sets the hue scale).

    Returns:
        float array of shape (n_vertices, 3) in 0..1.
    """
    hue = layer_hue(layer_argmax, n_layers)
    return np.clip(hue * entropy_brightness(layer_entropy)[..., None], 0.0, 1.0)


def layer_colour_bar(n_layers: int, *, n_entropy: int = 64) -> np.ndarray:
    """The 2-D legend of the layer map: RGB image of shape (n_entropy, n_layers, 3).

    Column ``j`` is layer ``j``; row ``i`` is entropy ``i / (n_entropy - 1)`` (row 0 = one-hot).
    """
    entropy = np.linspace(0.0, 1.0, n_entropy)[:, None].repeat(n_layers, axis=1)
    layers = np.arange(n_layers)[None, :].repeat(n_entropy, axis=0)
    return layer_colours(layers, entropy, n_layers)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) -> gamma-encoded sRGB in 0..1 (clipped), arrays of shape (..., 3)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    delta = 6.0 / 29.0
    xyz = np.where(f > delta, f**3, 3 * delta**2 * (f - 4.0 / 29.0)) * _WHITE_D65
    linear = xyz @ _XYZ_TO_LINEAR_SRGB.T
    encoded = np.where(linear <= 0.0031308, 12.92 * linear,
                       1.055 * np.power(np.clip(linear, 0.0031308, None), 1 / 2.4) - 0.055)
    return np.clip(encoded, 0.0, 1.0)


def space_colours(space_x: np.ndarray, space_y: np.ndarray, *, extent: float = 1.0) -> np.ndarray:
    """Space-map RGB of image points: float array of shape (n_vertices, 3).

    ``space_x`` and ``space_y`` are in [-1, 1] (grid_sample convention: x left -> right,
    y top -> bottom). x drives CIELAB a* (green -> red), y drives b* (yellow at the top ->
    blue at the bottom); lightness is constant at :data:`SPACE_LIGHTNESS`. The colour
    square spans ``[-extent, extent]`` on both axes; points outside take the edge colour.
    """
    if not 0.0 < extent <= 1.0:
        raise InvalidInputError(f"space extent {extent} must be in (0, 1]")
    x = np.clip(np.asarray(space_x, dtype=np.float64) / extent, -1.0, 1.0)
    y = np.clip(np.asarray(space_y, dtype=np.float64) / extent, -1.0, 1.0)
    lab = np.stack([np.full_like(x, SPACE_LIGHTNESS), SPACE_CHROMA * x, -SPACE_CHROMA * y], axis=-1)
    return lab_to_srgb(lab)


def space_colour_square(n: int = 64) -> np.ndarray:
    """The space map's legend: RGB image of shape (n, n, 3), row 0 = image top, column 0 = image left."""
    coords = np.linspace(-1.0, 1.0, n)
    x, y = np.meshgrid(coords, coords)
    return space_colours(x, y)


def auto_space_extent(points: list[tuple[np.ndarray, np.ndarray]], *, quantile: float = 0.9,
                      step: float = 0.05, minimum: float = 0.1) -> float:
    """One space-map extent for fits drawn together: the ``quantile`` of ``max(|x|, |y|)`` over
    all their points, rounded up to a multiple of ``step`` and kept within ``[minimum, 1]``.

    Args:
        points: one ``(space_x, space_y)`` pair of arrays per fit; NaN points (fits without a
            sample point, e.g. ridge) are ignored. With no finite point the extent is 1.
    """
    radii = [np.maximum(np.abs(np.asarray(x, float)), np.abs(np.asarray(y, float))) for x, y in points]
    finite = np.concatenate([r[np.isfinite(r)] for r in radii]) if radii else np.empty(0)
    if finite.size == 0:
        return 1.0
    extent = np.ceil(np.quantile(finite, quantile) / step - 1e-9) * step
    return round(float(np.clip(extent, minimum, 1.0)), 6)


def scalar_colours(values: np.ndarray, *, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """RGBA of scalars through a named colormap; NaN values get alpha 0. Shape (..., 4)."""
    values = np.asarray(values, dtype=np.float64)
    span = vmax - vmin if vmax != vmin else 1.0
    rgba = colormaps[cmap](np.clip((values - vmin) / span, 0.0, 1.0))
    rgba[~np.isfinite(values)] = 0.0
    return rgba


def cluster_colours(labels: np.ndarray) -> np.ndarray:
    """``tab20`` RGB of integer cluster labels (labels wrap after 20), shape (n_vertices, 3)."""
    palette = np.asarray(colormaps[CLUSTER_CMAP].colors)
    return palette[np.asarray(labels, dtype=np.int64) % len(palette)]
