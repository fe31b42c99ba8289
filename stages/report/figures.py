"""Figures of one fit: a map on the flat sheets with its legend, the per-layer weight grid,
inflated views, and the legends themselves (2-D layer x entropy bar, space colour square).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from stages.fit.result import FitResult
from stages.mesh import CorticalMesh
from stages.report.charts import render_roi_summary
from stages.report.colours import layer_colour_bar, space_colour_square
from stages.report.flatmap import render_flatmap
from stages.report.inflated import render_inflated
from stages.report.maps import VertexMap, fit_maps, layer_weight_maps
from stages.report.summaries import score_hierarchy, summarise_rois
from stages.report.surface_values import place_on_mesh

#: Where a map's legend sits inside the flatmap axes (axes fraction: x, y, width, height).
LEGEND_BOX = (0.04, 0.06, 0.11, 0.24)
COLORBAR_BOX = (0.02, 0.06, 0.015, 0.3)


def mesh_values(fit: FitResult, values: np.ndarray, mesh: CorticalMesh) -> dict[str, np.ndarray]:
    """Per-vertex ``values`` of ``fit`` placed on ``mesh`` (NaN where the fit has no vertex)."""
    return place_on_mesh(values, fit.vertices["hemisphere"], fit.vertices["fsaverage_index"], mesh)


def roi_labels_on_mesh(fit: FitResult, mesh: CorticalMesh) -> dict[str, np.ndarray]:
    """The fit's ROI name per mesh vertex ("" outside every ROI)."""
    return place_on_mesh(np.asarray(fit.vertices["roi"]).astype(str), fit.vertices["hemisphere"],
                         fit.vertices["fsaverage_index"], mesh, fill="")


def render_map(fit: FitResult, vertex_map: VertexMap, flat: CorticalMesh, *, rois: bool = True,
               title: str | None = None, resolution: int = 1200, crop: bool = False,
               ax: Axes | None = None) -> Figure:
    """One map of ``fit`` on the flat sheets, with ROI outlines and its legend in the lower left.

    Args:
        fit: the fit whose vertices ``vertex_map`` describes.
        vertex_map: from :func:`stages.report.maps.fit_maps`.
        flat: the ``flat`` mesh.
        rois: outline and label the fit's ROIs.
        title: axes title (the map's title when omitted).
        resolution: raster pixels across both sheets.
        crop: zoom onto the fit's vertices.
        ax: axes to draw into; a new figure when omitted.
    """
    figure = render_flatmap(flat, mesh_values(fit, vertex_map.drawn, flat), cmap=vertex_map.cmap,
                            vmin=vertex_map.vmin, vmax=vertex_map.vmax,
                            roi_labels=roi_labels_on_mesh(fit, flat) if rois else None,
                            title=vertex_map.title if title is None else title, resolution=resolution,
                            shading="flat" if vertex_map.legend == "clusters" else "gouraud", crop=crop, ax=ax)
    ax = ax or figure.axes[0]
    draw_legend(ax, vertex_map, layer_names=fit.layer_names)
    return figure


def draw_legend(ax: Axes, vertex_map: VertexMap, *, layer_names: Sequence[str]) -> None:
    """Draw the legend of ``vertex_map`` in the lower-left corner of the map's axes ``ax``."""
    if vertex_map.legend == "layer":
        draw_layer_legend(ax.inset_axes(LEGEND_BOX), layer_names)
    elif vertex_map.legend == "space":
        draw_space_legend(ax.inset_axes(LEGEND_BOX), extent=vertex_map.extent)
    elif vertex_map.legend == "colorbar":
        mappable = ScalarMappable(norm=Normalize(vertex_map.vmin, vertex_map.vmax), cmap=vertex_map.cmap)
        colorbar = ax.figure.colorbar(mappable, cax=ax.inset_axes(COLORBAR_BOX))
        colorbar.ax.tick_params(labelsize=6)
        colorbar.set_label(vertex_map.label, fontsize=6)


def draw_layer_legend(ax: Axes, layer_names: Sequence[str]) -> None:
    """The layer map's 2-D colour bar: layer along x, ticked in relative depth (0 first layer, 1 last: the hue
    scale every network shares), normalised entropy along y (0 at the top)."""
    n_layers = len(layer_names)
    image = layer_colour_bar(n_layers)
    ax.imshow(image, aspect="auto", extent=(-0.5, n_layers - 0.5, 1.0, 0.0), interpolation="nearest")
    depths = (0.0, 0.5, 1.0) if n_layers > 1 else (0.0,)
    ax.set_xticks([depth * (n_layers - 1) for depth in depths], [f"{depth:g}" for depth in depths], fontsize=5)
    ax.set_yticks([0, 1], ["0", "1"], fontsize=5)
    ax.set_xlabel(f"relative depth ({n_layers} layers)", fontsize=6, labelpad=1)
    ax.set_ylabel("entropy", fontsize=6, labelpad=1)


def draw_space_legend(ax: Axes, *, extent: float = 1.0) -> None:
    """The space map's colour square in image coordinates (top of the square = top of the image);
    with ``extent < 1`` the title says which central part of the image the square spans."""
    ax.imshow(space_colour_square(), extent=(-1, 1, 1, -1), interpolation="bilinear")
    ax.set_xticks([-1, 1], ["left", "right"], fontsize=5)
    ax.set_yticks([-1, 1], ["top", "bottom"], fontsize=5)
    ax.set_title("image" if extent >= 1.0 else f"image, centre ±{extent:g}", fontsize=5, pad=2)


def render_layer_grid(fit: FitResult, flat: CorticalMesh, *, n_cols: int = 4, resolution: int = 600,
                      crop: bool = False) -> Figure:
    """A grid of per-layer weight maps (``inferno``, 0..1), one panel per layer, one shared colour bar."""
    maps = layer_weight_maps(fit)
    n_rows = -(-len(maps) // n_cols)
    figure = Figure(figsize=(3.2 * n_cols, 1.5 * n_rows + 0.4), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, vertex_map in zip(axes, maps):
        render_flatmap(flat, mesh_values(fit, vertex_map.values, flat), cmap=vertex_map.cmap, vmin=0.0, vmax=1.0,
                       resolution=resolution, crop=crop, ax=ax)
        ax.set_title(vertex_map.title, fontsize=7)
    for ax in axes[len(maps):]:
        ax.set_axis_off()
    figure.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=maps[0].cmap), ax=list(axes), shrink=0.5,
                    label="layer weight")
    figure.suptitle(f"per-layer weights: {fit.model} / {fit.subject} ({fit.method})", fontsize=9)
    return figure


def render_inflated_map(fit: FitResult, vertex_map: VertexMap, inflated: CorticalMesh) -> Figure:
    """``vertex_map`` on the inflated surfaces from the lateral, medial, ventral and posterior sides."""
    return render_inflated(inflated, mesh_values(fit, vertex_map.drawn, inflated), cmap=vertex_map.cmap,
                           vmin=vertex_map.vmin, vmax=vertex_map.vmax, title=vertex_map.title,
                           colorbar_label=vertex_map.label if vertex_map.colours is None else None)


def iter_fit_figures(fit: FitResult, flat: CorticalMesh, inflated: CorticalMesh, *,
                     clusters: np.ndarray | None = None, inflated_maps: Sequence[str] = ("layer", "space"),
                     resolution: int = 1200, crop: bool = False, space_extent: float = 1.0,
                     alpha: float | None = None) -> Iterator[tuple[str, str, Figure]]:
    """Every figure of one fit as ``(name, title, figure)``, one at a time (callers save and drop each).

    The maps of :func:`stages.report.maps.fit_maps` on the flat sheets, the per-layer weight
    grid, the maps named in ``inflated_maps`` on the inflated surfaces, and the ROI chart;
    ``resolution`` is the raster width of a single map (grid panels get half); ``crop`` zooms
    the flatmaps onto the fit's vertices; ``space_extent`` is the space map's colour-square extent;
    ``alpha`` keeps only vertices significant at that false discovery rate in the maps and the ROI chart.
    """
    maps = fit_maps(fit, clusters=clusters, space_extent=space_extent, alpha=alpha)
    for vertex_map in maps:
        yield vertex_map.name, vertex_map.title, render_map(fit, vertex_map, flat, resolution=resolution, crop=crop)
    yield "layer_weights", "per-layer weight maps", render_layer_grid(fit, flat, resolution=resolution // 2, crop=crop)
    for vertex_map in maps:
        if vertex_map.name in inflated_maps:
            yield (f"inflated_{vertex_map.name}", f"{vertex_map.title}, inflated views",
                   render_inflated_map(fit, vertex_map, inflated))
    summary = summarise_rois(fit, alpha=alpha)
    if not summary.empty:
        yield ("roi_summary", "ROI layer profiles and mean selected layer (bars: 95 % bootstrap interval)",
               render_roi_summary(summary, fit.layer_names, score=score_hierarchy(fit, summary, alpha=alpha),
                                  title=f"{fit.model} / {fit.subject} ({fit.method})"))
