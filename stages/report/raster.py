"""Rasterising flat sheets: which face covers each pixel, and where inside it, computed once per mesh.

Drawing tens of thousands of polygons per map is slow and gives hairline seams; instead
each pixel of a fixed grid over the flat layout is located in its triangle once
(:class:`SheetRaster`), after which every map is a gather of vertex colours: Gouraud
(barycentric) interpolation or one colour per face, composited over the grey underlay.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from matplotlib.tri import Triangulation

from stages.mesh import HEMISPHERES, CorticalMesh
from stages.report.surface_values import underlay_grey

_CACHE: OrderedDict[tuple[int, int], tuple[CorticalMesh, "SheetRaster"]] = OrderedDict()
_CACHE_SIZE = 4


@dataclass(frozen=True)
class SheetRaster:
    """Pixel -> (hemisphere, face, barycentric weights) of a side-by-side flat layout.

    Attributes:
        extent: (left, right, bottom, top) of the image in layout coordinates.
        shape: (height, width) in pixels.
        pixels: hemisphere -> int64 array (n_covered,) of flat pixel indices (row 0 = bottom).
        faces: hemisphere -> int64 array (n_covered, 3) of the covering face's vertices.
        weights: hemisphere -> float32 array (n_covered, 3) of barycentric weights.
    """

    extent: tuple[float, float, float, float]
    shape: tuple[int, int]
    pixels: dict[str, np.ndarray]
    faces: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]

    def paint(self, mesh: CorticalMesh, rgba: Mapping[str, np.ndarray], *, shading: str = "gouraud") -> np.ndarray:
        """RGBA image (height, width, 4): vertex colours over the grey underlay, transparent off the sheet.

        Args:
            mesh: the flat mesh this raster was built for (underlay).
            rgba: hemisphere -> float array (n_mesh_vertices, 4).
            shading: ``"gouraud"`` (interpolate inside faces) or ``"flat"`` (face mean, for labels).
        """
        image = np.zeros((self.shape[0] * self.shape[1], 4))
        for name in HEMISPHERES:
            faces, weights = self.faces[name], self.weights[name].astype(np.float64)
            if shading == "flat":
                weights = np.full_like(weights, 1.0 / 3.0)
            colour = (weights[:, :, None] * rgba[name][faces, :3]).sum(axis=1)
            grey = (weights * underlay_grey(mesh.hemisphere(name))[faces]).sum(axis=1, keepdims=True)
            alpha = rgba[name][faces, 3].min(axis=1, keepdims=True)
            image[self.pixels[name], :3] = np.clip(alpha * colour + (1.0 - alpha) * grey, 0.0, 1.0)
            image[self.pixels[name], 3] = 1.0
        return image.reshape(self.shape[0], self.shape[1], 4)


def sheet_raster(mesh: CorticalMesh, offsets: Mapping[str, np.ndarray], *, width: int) -> SheetRaster:
    """The (cached) raster of ``mesh``'s flat sheets shifted by ``offsets``, ``width`` pixels across."""
    key = (id(mesh), width)
    if key in _CACHE and _CACHE[key][0] is mesh:
        _CACHE.move_to_end(key)
        return _CACHE[key][1]
    raster = _build(mesh, offsets, width)
    _CACHE[key] = (mesh, raster)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return raster


def _build(mesh: CorticalMesh, offsets: Mapping[str, np.ndarray], width: int) -> SheetRaster:
    layouts = {name: np.asarray(mesh.hemisphere(name).coords[:, :2], np.float64) + offsets[name] for name in HEMISPHERES}
    used = np.concatenate([layouts[name][np.unique(mesh.hemisphere(name).faces)] for name in HEMISPHERES])
    low, high = used.min(axis=0), used.max(axis=0)
    step = (high[0] - low[0]) / width
    height = int(np.ceil((high[1] - low[1]) / step))
    xs = low[0] + (np.arange(width) + 0.5) * step
    ys = low[1] + (np.arange(height) + 0.5) * step
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    pixels, faces, weights = {}, {}, {}
    for name in HEMISPHERES:
        hemi_faces = mesh.hemisphere(name).faces
        xy = layouts[name]
        finder = Triangulation(xy[:, 0], xy[:, 1], hemi_faces).get_trifinder()
        found = finder(points[:, 0], points[:, 1])
        covered = np.flatnonzero(found >= 0)
        corners = xy[hemi_faces[found[covered]]]
        pixels[name] = covered
        faces[name] = hemi_faces[found[covered]]
        weights[name] = _barycentric(points[covered], corners).astype(np.float32)
    extent = (low[0], low[0] + width * step, low[1], low[1] + height * step)
    return SheetRaster(extent, (height, width), pixels, faces, weights)


def _barycentric(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (n, 3) of points (n, 2) in triangles (n, 3, 2), clipped to 0..1."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    v0, v1, v2 = b - a, c - a, points - a
    denominator = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    denominator = np.where(np.abs(denominator) < 1e-12, 1e-12, denominator)
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / denominator
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / denominator
    weights = np.clip(np.stack([1.0 - w1 - w2, w1, w2], axis=1), 0.0, 1.0)
    return weights / weights.sum(axis=1, keepdims=True)
