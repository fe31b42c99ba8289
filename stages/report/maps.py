"""The per-vertex maps of method.md, as data: what to paint for each fit and how.

A :class:`VertexMap` holds one value (or colour) per fit vertex plus its colour scale and
legend; :func:`fit_maps` lists every map a fit supports (layer, relative depth, layer confidence and
layer-set size, space, scale, scores, significance, channel clusters when read-out weights
are available), optionally restricted to the vertices significant at a false discovery rate. The renderers in
:mod:`stages.report.figures` draw them; :mod:`stages.report.export` writes their values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cache.errors import InvalidInputError
from stages.fit.result import FitResult
from stages.report.colours import (
    CONFIDENCE_CMAP, LAYER_CMAP, LAYER_WEIGHT_CMAP, SCALE_CMAP, SCORE_CMAP, SET_SIZE_CMAP, SIGNIFICANCE_CMAP,
    cluster_colours, layer_colours, space_colours,
)
from stages.report.depth import DEPTH_COLUMN, DEPTH_RANGE, fit_relative_depth

#: Score columns drawn as maps (when the fit has them) and their titles.
SCORE_MAPS = {"r2_test": "R² (test)", "r2_val": "R² (validation)", "r2_test_nc": "noise-normalised R² (test)",
              "r2_val_nc": "noise-normalised R² (validation)", "noise_ceiling": "noise ceiling"}
#: Maps drawn whole even when the others keep only significant vertices.
UNMASKED_MAPS = ("significance", "noise_ceiling")
#: -log10 q at which the significance map saturates.
SIGNIFICANCE_VMAX = 4.0


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


def fit_maps(fit: FitResult, *, clusters: np.ndarray | None = None, space_extent: float = 1.0,
             alpha: float | None = None) -> list[VertexMap]:
    """Every map of ``fit``: layer, relative depth (:mod:`stages.report.depth`: the expected layer on the fixed
    0..1 scale every network shares), layer confidence and layer-set size (fits with layer sets), space, scale,
    each score column present, significance (fits with q-values), channel clusters.

    Args:
        fit: a fit or planted truth.
        clusters: optional int array of shape (n_vertices,), channel-cluster labels.
        space_extent: half-width of the image region the space map's colour square spans.
        alpha: when given, every map of a fit with q-values but the significance map and the noise
            ceiling shows only the vertices with ``q_value <= alpha`` (the others are left blank),
            and its title says how many passed.
    """
    v = fit.vertices
    n_layers = len(fit.layer_names)
    maps = [VertexMap("layer", "layer (hue: argmax layer; dark: high entropy)", np.asarray(v["layer_argmax"], float),
                      colours=layer_colours(v["layer_argmax"], v["layer_entropy"], n_layers), legend="layer"),
            depth_map(fit)]
    if "layer_confidence" in v:
        maps.append(VertexMap("layer_confidence", "layer confidence (share of bootstrap resamples where the shown "
                              "layer is best)", np.asarray(v["layer_confidence"], float), cmap=CONFIDENCE_CMAP,
                              label="confidence"))
        maps.append(VertexMap("layer_set_size", "layers in the 90 % layer set", np.asarray(v["layer_set_size"], float),
                              cmap=SET_SIZE_CMAP, vmin=1.0, vmax=float(max(n_layers, 2)), label="layers"))
    maps += [
        VertexMap("space", "space (selected image point)", np.hypot(v["space_x"], v["space_y"]).astype(float),
                  colours=space_colours(v["space_x"], v["space_y"], extent=space_extent), legend="space",
                  extent=space_extent),
        VertexMap("scale", "scale (0 local, 1 global)", np.asarray(v["scale"], float), cmap=SCALE_CMAP,
                  label="scale"),
    ]
    for column, title in SCORE_MAPS.items():
        if column in v:
            maps.append(VertexMap(column, title, np.asarray(v[column], float), cmap=SCORE_CMAP, label=column))
    if "q_value" in v:
        q_values = np.asarray(v["q_value"], dtype=np.float64)
        maps.append(VertexMap("significance", f"significance of test prediction: -log10 q (FDR); "
                              f"{int(np.sum(q_values <= 0.05))} of {len(q_values)} at q ≤ 0.05",
                              -np.log10(np.clip(q_values, 1e-300, 1.0)), cmap=SIGNIFICANCE_CMAP, vmin=0.0,
                              vmax=SIGNIFICANCE_VMAX, label="-log10 q"))
    if clusters is not None:
        clusters = np.asarray(clusters)
        if clusters.shape != (fit.n_vertices,):
            raise InvalidInputError(f"cluster labels have shape {clusters.shape}; expected ({fit.n_vertices},)")
        maps.append(VertexMap("clusters", f"channel clusters ({len(np.unique(clusters))})", clusters.astype(float),
                              colours=cluster_colours(clusters), legend="clusters"))
    if alpha is not None and "q_value" in v:
        keep = np.asarray(v["q_value"], dtype=np.float64) <= alpha
        maps = [vertex_map if vertex_map.name in UNMASKED_MAPS else _masked(vertex_map, keep, alpha)
                for vertex_map in maps]
    return maps


def _masked(vertex_map: VertexMap, keep: np.ndarray, alpha: float) -> VertexMap:
    """``vertex_map`` blank (NaN) outside ``keep``, its title saying how many vertices passed ``q <= alpha``."""
    values = np.where(keep, vertex_map.values, np.nan)
    colours = None if vertex_map.colours is None else np.where(keep[:, None], vertex_map.colours, np.nan)
    return dataclasses.replace(vertex_map, values=values, colours=colours,
                               title=f"{vertex_map.title} [q ≤ {alpha:g}: {int(keep.sum())} of {len(keep)} vertices]")


def depth_map(fit: FitResult) -> VertexMap:
    """The relative depth of each vertex's expected layer, coloured like the layer map on the fixed 0..1 scale."""
    return VertexMap(DEPTH_COLUMN, f"relative depth (expected layer / {max(len(fit.layer_names) - 1, 1)})",
                     fit_relative_depth(fit), cmap=LAYER_CMAP, vmin=DEPTH_RANGE[0], vmax=DEPTH_RANGE[1],
                     label="relative depth")


def layer_weight_maps(fit: FitResult) -> list[VertexMap]:
    """One ``inferno`` 0..1 map per layer: that layer's softmax weight at each vertex."""
    weights = fit.layer_weights
    return [VertexMap(f"layer_weight_{i:02d}", f"{i}: {name}", weights[:, i].astype(float),
                      cmap=LAYER_WEIGHT_CMAP, label="layer weight")
            for i, name in enumerate(fit.layer_names)]


def scalar_exports(fit: FitResult, *, clusters: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Name -> float array (n_vertices,) of every per-vertex quantity worth exporting as a surface map."""
    v = fit.vertices
    names = ["layer_argmax", "layer_entropy", "layer_mean", "layer_confidence", "layer_set_size",
             "layer_set_size_sampling", "space_x", "space_y", "scale", *SCORE_MAPS, "p_value", "q_value"]
    exports = {name: np.asarray(v[name], dtype=np.float32) for name in names if name in v}
    exports[DEPTH_COLUMN] = fit_relative_depth(fit).astype(np.float32)
    exports.update({m.name: m.values.astype(np.float32) for m in layer_weight_maps(fit)})
    if clusters is not None:
        exports["clusters"] = np.asarray(clusters, dtype=np.float32)
    return exports
