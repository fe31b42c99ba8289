"""The per-vertex maps of method.md, as data: what to paint for each fit and how.

A :class:`VertexMap` holds one value (or colour) per fit vertex plus its colour scale and
legend; :func:`fit_maps` lists every map a fit supports (layer, space, scale, scores,
channel clusters when read-out weights are available). The renderers in
:mod:`stages.report.figures` draw them; :mod:`stages.report.export` writes their values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cache.errors import InvalidInputError
from stages.fit.result import FitResult
from stages.report.colours import (
    LAYER_WEIGHT_CMAP, SCALE_CMAP, SCORE_CMAP, cluster_colours, layer_colours, space_colours,
)

#: Score columns drawn as maps (when the fit has them) and their titles.
SCORE_MAPS = {"r2_test": "R² (test)", "r2_val": "R² (validation)", "r2_test_nc": "noise-normalised R² (test)",
              "r2_val_nc": "noise-normalised R² (validation)", "noise_ceiling": "noise ceiling"}


@dataclass(frozen=True)
class VertexMap:
    """One map of one fit.

    Attributes:
        name: file-name stem (``"layer"``, ``"space"``, ``"scale"``, ``"r2_test"``...).
        title: human title.
        colours: float array of shape (n_vertices, 3) when the map is drawn as RGB, else None.
        values: float array of shape (n_vertices,) of the exported scalar (the map itself for
            scalar maps; for RGB maps the quantity behind the colour, e.g. the argmax layer).
        cmap, vmin, vmax: colour scale of scalar maps.
        legend: ``"layer"`` (2-D layer x entropy bar), ``"space"`` (colour square),
            ``"clusters"`` or ``"colorbar"``.
        label: colour-bar label.
        extent: half-width of the image region the space colour square spans (space maps).
    """

    name: str
    title: str
    values: np.ndarray
    colours: np.ndarray | None = None
    cmap: str = "viridis"
    vmin: float = 0.0
    vmax: float = 1.0
    legend: str = "colorbar"
    label: str = ""
    extent: float = 1.0

    @property
    def drawn(self) -> np.ndarray:
        """What the renderer paints: RGB colours of shape (n_vertices, 3) or the scalar values."""
        return self.values if self.colours is None else self.colours


def fit_maps(fit: FitResult, *, clusters: np.ndarray | None = None, space_extent: float = 1.0) -> list[VertexMap]:
    """Every map of ``fit``: layer, space, scale, each score column present, channel clusters.

    Args:
        fit: a fit or planted truth.
        clusters: optional int array of shape (n_vertices,), channel-cluster labels.
        space_extent: half-width of the image region the space map's colour square spans.
    """
    v = fit.vertices
    n_layers = len(fit.layer_names)
    maps = [
        VertexMap("layer", "layer (hue: argmax layer; dark: high entropy)", np.asarray(v["layer_argmax"], float),
                  colours=layer_colours(v["layer_argmax"], v["layer_entropy"], n_layers), legend="layer"),
        VertexMap("space", "space (selected image point)", np.hypot(v["space_x"], v["space_y"]).astype(float),
                  colours=space_colours(v["space_x"], v["space_y"], extent=space_extent), legend="space",
                  extent=space_extent),
        VertexMap("scale", "scale (0 local, 1 global)", np.asarray(v["scale"], float), cmap=SCALE_CMAP,
                  label="scale"),
    ]
    for column, title in SCORE_MAPS.items():
        if column in v:
            maps.append(VertexMap(column, title, np.asarray(v[column], float), cmap=SCORE_CMAP, label=column))
    if clusters is not None:
        clusters = np.asarray(clusters)
        if clusters.shape != (fit.n_vertices,):
            raise InvalidInputError(f"cluster labels have shape {clusters.shape}; expected ({fit.n_vertices},)")
        maps.append(VertexMap("clusters", f"channel clusters ({len(np.unique(clusters))})", clusters.astype(float),
                              colours=cluster_colours(clusters), legend="clusters"))
    return maps


def layer_weight_maps(fit: FitResult) -> list[VertexMap]:
    """One ``inferno`` 0..1 map per layer: that layer's softmax weight at each vertex."""
    weights = fit.layer_weights
    return [VertexMap(f"layer_weight_{i:02d}", f"{i}: {name}", weights[:, i].astype(float),
                      cmap=LAYER_WEIGHT_CMAP, label="layer weight")
            for i, name in enumerate(fit.layer_names)]


def scalar_exports(fit: FitResult, *, clusters: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Name -> float array (n_vertices,) of every per-vertex quantity worth exporting as a surface map."""
    v = fit.vertices
    names = ["layer_argmax", "layer_entropy", "layer_mean", "space_x", "space_y", "scale", *SCORE_MAPS]
    exports = {name: np.asarray(v[name], dtype=np.float32) for name in names if name in v}
    exports.update({m.name: m.values.astype(np.float32) for m in layer_weight_maps(fit)})
    if clusters is not None:
        exports["clusters"] = np.asarray(clusters, dtype=np.float32)
    return exports
