"""Flatmaps: per-vertex values on both hemispheres' fsaverage ``flat`` sheets, side by side.

Drawn with matplotlib alone (no pycortex, no Inkscape): the flat sheets are rasterised
once per mesh (:mod:`stages.report.raster`), then each map is an image of interpolated
vertex colours over a grey sulcal-depth underlay; faces touching a vertex outside the
fit's mask show only the underlay. ROI outlines (the boundary edges of the faces inside
each ROI) and labels are vector lines and text on top, so SVG/PDF stay small and crisp.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from cache.errors import InvalidInputError
from stages.mesh import HEMISPHERES, CorticalMesh, HemisphereMesh
from stages.report.raster import sheet_raster
from stages.report.surface_values import value_range, vertex_rgba

#: Gap between the two hemispheres, as a fraction of the left sheet's width.
HEMISPHERE_GAP = 0.08
#: Margin around the shown vertices when cropping, as a fraction of their larger extent.
CROP_MARGIN = 0.25


def render_flatmap(mesh: CorticalMesh, values: Mapping[str, np.ndarray], *, cmap: str = "viridis",
                   vmin: float | None = None, vmax: float | None = None,
                   roi_labels: Mapping[str, np.ndarray] | None = None, title: str | None = None,
                   colorbar_label: str | None = None, shading: str = "gouraud", resolution: int = 1200,
                   crop: bool = False, ax: Axes | None = None) -> Figure:
    """Draw per-vertex values on the flat sheets of both hemispheres (left on the left).

    Args:
        mesh: a ``flat`` :class:`CorticalMesh` (z ignored).
        values: ``{"lh": array, "rh": array}``, each of shape (n_mesh_vertices,) scalar,
            (n_mesh_vertices, 3) RGB or (n_mesh_vertices, 4) RGBA in 0..1; NaN = not shown.
        cmap, vmin, vmax: colour scale of scalar values (range of the data when omitted).
        roi_labels: optional ``{"lh": str array (n_mesh_vertices,), ...}``, ROI name per
            vertex ("" = none); each ROI is outlined and labelled.
        title: axes title.
        colorbar_label: for scalar values, adds a colour bar with this label.
        shading: ``"gouraud"`` (colours interpolated inside faces) or ``"flat"`` (one colour
            per face: for labels such as clusters).
        resolution: pixels across both sheets (the raster; 1200 is crisp at print width).
        crop: zoom onto the shown vertices (plus a margin) instead of the whole sheets.
        ax: axes to draw into; a new figure when omitted.

    Returns:
        The figure holding ``ax``.
    """
    if mesh.lh.kind != "flat":
        raise InvalidInputError(f"render_flatmap needs the 'flat' surface, got {mesh.lh.kind!r}; load kind='flat'")
    scalar = np.asarray(values["lh"]).ndim == 1
    if scalar and (vmin is None or vmax is None):
        low, high = value_range(values)
        vmin = low if vmin is None else vmin
        vmax = high if vmax is None else vmax
    vmin, vmax = (0.0 if vmin is None else vmin), (1.0 if vmax is None else vmax)
    if ax is None:
        figure = Figure(figsize=(10, 4.2))
        ax = figure.add_subplot()
    if shading not in ("gouraud", "flat"):
        raise InvalidInputError(f"shading must be 'gouraud' or 'flat', got {shading!r}")
    offsets = hemisphere_offsets(mesh)
    raster = sheet_raster(mesh, offsets, width=resolution)
    rgba = {name: vertex_rgba(values[name], cmap=cmap, vmin=vmin, vmax=vmax) for name in HEMISPHERES}
    ax.imshow(raster.paint(mesh, rgba, shading=shading), extent=raster.extent, origin="lower",
              interpolation="antialiased")
    if roi_labels is not None:
        for name in HEMISPHERES:
            hemi = mesh.hemisphere(name)
            xy = np.asarray(hemi.coords[:, :2], dtype=np.float64) + offsets[name]
            draw_roi_outlines(ax, hemi, xy, np.asarray(roi_labels[name]))
    ax.set_aspect("equal")
    if crop:
        _crop_to_values(ax, mesh, offsets, rgba, raster.extent)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    if scalar and colorbar_label is not None:
        mappable = ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap)
        ax.figure.colorbar(mappable, ax=ax, shrink=0.6, pad=0.01, label=colorbar_label)
    return ax.figure


def draw_roi_outlines(ax: Axes, hemi: HemisphereMesh, xy: np.ndarray, labels: np.ndarray) -> None:
    """Outline and label each ROI of one hemisphere on a 2-D drawing.

    Args:
        ax: target axes.
        hemi: the hemisphere mesh (faces).
        xy: float array of shape (n_mesh_vertices, 2), drawn vertex positions.
        labels: array of shape (n_mesh_vertices,) of ROI names ("" or None = none).
    """
    labels = np.asarray(["" if label is None else str(label) for label in labels])
    for roi, boundary in roi_boundaries(hemi.faces, labels).items():
        ax.add_collection(LineCollection(xy[boundary], colors="black", linewidths=0.5, alpha=0.6))
        points = xy[labels == roi]
        anchor = points[np.argmin(((points - np.median(points, axis=0)) ** 2).sum(axis=1))]
        ax.text(anchor[0], anchor[1], roi, fontsize=5, ha="center", va="center", color="black",
                path_effects=[patheffects.withStroke(linewidth=1.5, foreground="white")])


def roi_boundaries(faces: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Outline of each ROI on a mesh: ROI name -> int array (n_edges, 2) of vertex pairs.

    A face belongs to an ROI when at least two of its vertices carry its label; the outline is
    the edges used by exactly one of the ROI's faces. ``labels`` is a str array of shape
    (n_mesh_vertices,) ("", "nan", "none" = no ROI); ROIs without a face are left out.
    """
    labels = np.asarray(labels).astype(str)
    outlines = {}
    for roi in sorted(set(labels.tolist()) - {"", "nan", "none", "None"}):
        inside = faces[(labels == roi)[faces].sum(axis=1) >= 2]
        if len(inside) == 0:
            continue
        edges = np.sort(np.concatenate([inside[:, [0, 1]], inside[:, [1, 2]], inside[:, [2, 0]]]), axis=1)
        unique, counts = np.unique(edges, axis=0, return_counts=True)
        outlines[roi] = unique[counts == 1]
    return outlines


def _crop_to_values(ax: Axes, mesh: CorticalMesh, offsets: Mapping[str, np.ndarray], rgba: Mapping[str, np.ndarray],
                    extent: tuple[float, float, float, float]) -> None:
    """Limit the axes to the shown vertices' bounding box plus a margin (whole sheets when none is shown)."""
    shown = [np.asarray(mesh.hemisphere(name).coords[rgba[name][:, 3] > 0, :2], np.float64) + offsets[name]
             for name in HEMISPHERES]
    points = np.concatenate(shown)
    if len(points) == 0:
        return
    low, high = points.min(axis=0), points.max(axis=0)
    margin = CROP_MARGIN * max(high[0] - low[0], high[1] - low[1])
    ax.set_xlim(max(low[0] - margin, extent[0]), min(high[0] + margin, extent[1]))
    ax.set_ylim(max(low[1] - margin, extent[2]), min(high[1] + margin, extent[3]))


def hemisphere_offsets(mesh: CorticalMesh) -> dict[str, np.ndarray]:
    """2-D shifts placing the right sheet beside the left one, vertically centred on it."""
    bounds = {}
    for name in HEMISPHERES:
        hemi = mesh.hemisphere(name)
        used = np.asarray(hemi.coords[np.unique(hemi.faces), :2], dtype=np.float64)
        bounds[name] = (used.min(axis=0), used.max(axis=0))
    (lh_min, lh_max), (rh_min, rh_max) = bounds["lh"], bounds["rh"]
    gap = HEMISPHERE_GAP * (lh_max[0] - lh_min[0])
    shift_x = lh_max[0] + gap - rh_min[0]
    shift_y = (lh_min[1] + lh_max[1]) / 2 - (rh_min[1] + rh_max[1]) / 2
    return {"lh": np.zeros(2), "rh": np.array([shift_x, shift_y])}
