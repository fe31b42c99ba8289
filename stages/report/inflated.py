"""Inflated-surface views (lateral, medial, ventral, posterior) by a plain orthographic projection.

Each view rotates the inflated mesh so the camera looks along one axis, drops faces that
point away from the camera, sorts the rest back to front (painter's algorithm) and shades
them by the angle to the camera. Both hemispheres appear in every view, left on the left
(ventral: seen from below with anterior at the top, so the left hemisphere is on the right,
as labelled).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from cache.errors import InvalidInputError
from stages.mesh import HEMISPHERES, CorticalMesh
from stages.report.surface_values import face_colours, value_range, vertex_rgba

#: view -> hemisphere -> (direction towards the camera, screen "up").
VIEWS: dict[str, dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]]] = {
    "lateral": {"lh": ((-1, 0, 0), (0, 0, 1)), "rh": ((1, 0, 0), (0, 0, 1))},
    "medial": {"lh": ((1, 0, 0), (0, 0, 1)), "rh": ((-1, 0, 0), (0, 0, 1))},
    "ventral": {"lh": ((0, 0, -1), (0, 1, 0)), "rh": ((0, 0, -1), (0, 1, 0))},
    "posterior": {"lh": ((0, -1, 0), (0, 0, 1)), "rh": ((0, -1, 0), (0, 0, 1))},
}
#: Views drawn with each hemisphere in its own camera, placed side by side.
SEPARATE_VIEWS = ("lateral", "medial")


def render_inflated(mesh: CorticalMesh, values: Mapping[str, np.ndarray], *,
                    views: Sequence[str] = ("lateral", "medial", "ventral", "posterior"),
                    cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
                    title: str | None = None, colorbar_label: str | None = None,
                    axes: Sequence[Axes] | None = None) -> Figure:
    """Draw per-vertex values on the inflated surfaces from several directions.

    Args:
        mesh: an ``inflated`` (or any 3-D) :class:`CorticalMesh`.
        values: ``{"lh": array, "rh": array}`` of shape (n_mesh_vertices,), (n, 3) or (n, 4); NaN = not shown.
        views: names from :data:`VIEWS`, one panel each.
        cmap, vmin, vmax: colour scale of scalar values.
        title: figure title.
        colorbar_label: for scalar values, adds a colour bar with this label.
        axes: one axes per view; a new figure (two rows from three views on) when omitted.

    Returns:
        The figure holding the axes.
    """
    unknown = [view for view in views if view not in VIEWS]
    if unknown:
        raise InvalidInputError(f"unknown view(s) {unknown}; choose from {sorted(VIEWS)}")
    if mesh.lh.kind == "flat":
        raise InvalidInputError("render_inflated needs a 3-D surface (kind 'inflated'), got 'flat'")
    scalar = np.asarray(values["lh"]).ndim == 1
    low, high = value_range(values) if scalar else (0.0, 1.0)
    vmin, vmax = (low if vmin is None else vmin), (high if vmax is None else vmax)
    if axes is None:
        n_rows = 1 if len(views) < 3 else 2
        n_cols = -(-len(views) // n_rows)
        figure = Figure(figsize=(4.0 * n_cols, 3.2 * n_rows))
        grid = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
        for spare in grid[len(views):]:
            spare.set_axis_off()
        axes = grid[:len(views)]
    if len(axes) != len(views):
        raise InvalidInputError(f"got {len(axes)} axes for {len(views)} views")
    rgba = {name: vertex_rgba(values[name], cmap=cmap, vmin=vmin, vmax=vmax) for name in HEMISPHERES}
    for ax, view in zip(axes, views):
        _draw_view(ax, mesh, rgba, view)
    figure = axes[0].figure
    if title:
        figure.suptitle(title, fontsize=10)
    if scalar and colorbar_label is not None:
        mappable = ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap)
        figure.colorbar(mappable, ax=list(axes), shrink=0.7, pad=0.01, label=colorbar_label)
    return figure


def project(coords: np.ndarray, towards_camera: Sequence[float], up: Sequence[float]) -> np.ndarray:
    """Orthographic camera coordinates: float array (n, 3) of (right, up, depth towards the camera)."""
    depth = np.asarray(towards_camera, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    right = np.cross(up, depth)
    return np.asarray(coords, dtype=np.float64) @ np.stack([right, up, depth], axis=1)


def _draw_view(ax: Axes, mesh: CorticalMesh, rgba: Mapping[str, np.ndarray], view: str) -> None:
    polygons, colours, depths = [], [], []
    centres = {name: mesh.hemisphere(name).coords.mean(axis=0) for name in HEMISPHERES}
    cursor = 0.0
    for name in HEMISPHERES:
        hemi = mesh.hemisphere(name)
        towards, up = VIEWS[view][name]
        coords = np.asarray(hemi.coords, dtype=np.float64)
        if view in SEPARATE_VIEWS:
            coords = coords - centres[name]
        else:  # pull the hemispheres apart so neither hides the other
            gap = 0.05 * np.ptp(coords[:, 0])
            shift = -gap - coords[:, 0].max() if name == "lh" else gap - coords[:, 0].min()
            coords = coords + np.array([shift, 0.0, 0.0])
        camera = project(coords, towards, up)
        if view in SEPARATE_VIEWS:
            camera[:, 0] += cursor - camera[:, 0].min()
            cursor = camera[:, 0].max() + 0.1 * np.ptp(camera[:, 0])
        triangles = camera[hemi.faces]
        normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        facing = normals[:, 2] > 0
        shade = np.abs(normals[:, 2]) / np.maximum(np.linalg.norm(normals, axis=1), 1e-12)
        colour = face_colours(hemi, rgba[name]) * (0.45 + 0.55 * shade)[:, None]
        polygons.append(triangles[facing, :, :2])
        colours.append(colour[facing])
        depths.append(triangles[facing, :, 2].mean(axis=1))
    order = np.argsort(np.concatenate(depths))
    collection = PolyCollection(np.concatenate(polygons)[order], facecolors=np.concatenate(colours)[order],
                                edgecolors="face", linewidths=0.1, rasterized=True)
    ax.add_collection(collection)
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.set_axis_off()
    caption = {"ventral": f"{view} (L right)"}.get(view, view)
    ax.set_title(caption, fontsize=8)
