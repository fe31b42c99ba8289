"""What the interactive viewer offers for one fit: its maps and the values read out at a vertex.

Scalar maps come from one table of column specs (:data:`COLUMN_SPECS`): a column a fit's
table holds is offered as a map and read out at the pointed vertex, one it lacks is skipped,
so per-vertex columns added to ``vertices.parquet`` later (layer confidence, credible-set size,
q-values) appear by adding a row here. The coloured maps (layer, space, channel clusters) and the
relative depth (the expected layer on the fixed 0..1 scale every network shares, in place of a map of
the expected layer index) are those of :func:`stages.report.maps.fit_maps`, so the viewer paints exactly the static maps'
colours, and the scalar maps use the static maps' colour scales; a planted truth adds its own maps and the fit-minus-truth differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.fit.result import FitResult
from stages.report.colours import (
    CONFIDENCE_CMAP, SCALE_CMAP, SCORE_CMAP, SET_SIZE_CMAP, SIGNIFICANCE_CMAP,
)
from stages.report.compare import align_vertices, difference_maps
from stages.report.depth import DEPTH_COLUMN, fit_relative_depth
from stages.report.maps import SCORE_MAPS, VertexMap, fit_maps, layer_weight_maps

#: Value ranges a spec may name: fixed 0..1, a set size 1..n_layers, or 0 to the largest finite value.
RANGES = ("unit", "set_size", "positive")


@dataclass(frozen=True)
class ColumnSpec:
    """A per-vertex column shown as a scalar map and in the readout, when a fit's table has it.

    Attributes:
        column: column of the per-vertex table.
        title: map and readout label.
        group: heading of the map in the switcher.
        cmap: matplotlib colormap name.
        value_range: one of :data:`RANGES`.
        transform: ``"identity"`` or ``"-log10"`` (the map paints ``-log10(value)``; the readout shows the value).
        digits: readout format: decimals, ``"int"`` or ``"g"`` (3 significant digits).
        as_map: offered in the map switcher (else readout only).
    """

    column: str
    title: str
    group: str
    cmap: str
    value_range: str = "unit"
    transform: str = "identity"
    digits: int | str = 3
    as_map: bool = True


COLUMN_SPECS: tuple[ColumnSpec, ...] = (
    ColumnSpec("layer_mean", "expected layer", "selections", "viridis", digits=2, as_map=False),
    ColumnSpec("layer_entropy", "layer entropy (0 one layer, 1 uniform)", "selections", "viridis", as_map=False),
    ColumnSpec("scale", "scale (0 local, 1 global)", "selections", SCALE_CMAP),
    *(ColumnSpec(column, title, "scores", SCORE_CMAP) for column, title in SCORE_MAPS.items()),
    ColumnSpec("layer_confidence", "layer confidence", "uncertainty", CONFIDENCE_CMAP),
    ColumnSpec("layer_set_size", "layers in the 90 % credible set", "uncertainty", SET_SIZE_CMAP, "set_size", digits="int"),
    ColumnSpec("layer_set_size_sampling", "layers in the 90 % set from resampling alone", "uncertainty", SET_SIZE_CMAP,
               "set_size", digits="int"),
    ColumnSpec("p_value", "-log10 p (test prediction)", "uncertainty", SIGNIFICANCE_CMAP, "positive", "-log10", "g"),
    ColumnSpec("q_value", "-log10 q (FDR, test prediction)", "uncertainty", SIGNIFICANCE_CMAP, "positive", "-log10", "g"),
    ColumnSpec("n_subjects", "subjects covering the vertex", "average", "viridis", "positive", digits="int"),
)

#: Readout label of a transformed column (the readout shows the column itself).
_READOUT_LABELS = {"p_value": "p (test prediction)", "q_value": "q (FDR, test prediction)"}


@dataclass(frozen=True)
class ViewerMap:
    """One entry of the viewer's map switcher: a :class:`VertexMap` under a group heading; ``layer`` is set
    for per-layer weight maps, which the page paints from its layer-weight matrix."""

    group: str
    map: VertexMap
    layer: int | None = None


@dataclass(frozen=True)
class ReadoutField:
    """A value shown for the pointed vertex: ``values`` (n_vertices,) under ``name`` and ``label``."""

    name: str
    label: str
    values: np.ndarray
    digits: int | str = 3


def column_maps(fit: FitResult) -> list[ViewerMap]:
    """The scalar maps of every :data:`COLUMN_SPECS` column ``fit`` holds (``as_map`` ones only)."""
    maps = []
    for spec in COLUMN_SPECS:
        if spec.as_map and spec.column in fit.vertices:
            values = _transformed(np.asarray(fit.vertices[spec.column], dtype=np.float64), spec.transform)
            vmin, vmax = _value_range(spec.value_range, values, len(fit.layer_names))
            maps.append(ViewerMap(spec.group, VertexMap(spec.column, spec.title, values, cmap=spec.cmap, vmin=vmin,
                                                        vmax=vmax, label=spec.title)))
    return maps


def readout_fields(fit: FitResult) -> list[ReadoutField]:
    """Every :data:`COLUMN_SPECS` column ``fit`` holds, as raw values for the vertex readout, the expected layer
    followed by its relative depth."""
    fields = []
    for spec in (spec for spec in COLUMN_SPECS if spec.column in fit.vertices):
        fields.append(ReadoutField(spec.column, _READOUT_LABELS.get(spec.column, spec.title),
                                   np.asarray(fit.vertices[spec.column], dtype=np.float64), spec.digits))
        if spec.column == "layer_mean":
            fields.append(ReadoutField(DEPTH_COLUMN, "relative depth (expected layer / (layers - 1))",
                                       fit_relative_depth(fit), 2))
    return fields


def viewer_maps(fit: FitResult, *, clusters: np.ndarray | None = None, truth: FitResult | None = None,
                space_extent: float = 1.0, extra: list[VertexMap] | tuple[VertexMap, ...] = ()) -> list[ViewerMap]:
    """Every map the viewer offers for ``fit``, in switcher order.

    Args:
        fit: a fit, planted truth, subject average or difference subset.
        clusters: optional int array (n_vertices,), channel-cluster labels.
        truth: the planted truth of the fit's subject: adds its layer, space and scale maps and the
            fit-minus-truth differences, on the vertices both share.
        space_extent: half-width of the region the space colour square spans.
        extra: maps of ``fit``'s vertices shown first (e.g. the differences of a comparison).
    """
    static = {m.name: m for m in fit_maps(fit, clusters=clusters, space_extent=space_extent)}
    scalars = column_maps(fit)
    maps = [ViewerMap("difference", m) for m in extra]
    maps += [ViewerMap("selections", static["layer"]), ViewerMap("selections", static[DEPTH_COLUMN]),
             ViewerMap("selections", static["space"]), *scalars]
    maps += [ViewerMap("layer weights", m, layer=i) for i, m in enumerate(layer_weight_maps(fit))]
    if "clusters" in static:
        maps.append(ViewerMap("channel clusters", static["clusters"]))
    if truth is not None and truth is not fit:
        maps += truth_maps(fit, truth, space_extent=space_extent)
    return maps


def truth_maps(fit: FitResult, truth: FitResult, *, space_extent: float = 1.0) -> list[ViewerMap]:
    """The planted truth's layer, space and scale maps and the fit-minus-truth differences, on ``fit``'s
    vertices (NaN / not drawn where the truth has no vertex)."""
    rows = align_vertices(truth, fit)
    truth_static = {m.name: m for m in fit_maps(truth, space_extent=space_extent)}
    maps = [ViewerMap("planted truth", _on_rows(truth_static[name], rows, f"truth_{name}", f"truth: {truth_static[name].title}"))
            for name in ("layer", "space", "scale")]
    subset, differences = difference_maps(truth, fit)
    subset_rows = align_vertices(subset, fit)
    maps += [ViewerMap("fit minus truth", _on_rows(m, subset_rows, f"minus_truth_{m.name}", f"fit − truth: {m.title}"))
             for m in differences]
    return maps


def _on_rows(vertex_map: VertexMap, rows: np.ndarray, name: str, title: str) -> VertexMap:
    """``vertex_map`` of another table moved onto a fit's rows (``rows[i]`` = source row, -1 = none)."""
    have = rows >= 0
    values = np.full(len(rows), np.nan)
    values[have] = vertex_map.values[rows[have]]
    colours = None
    if vertex_map.colours is not None:
        colours = np.full((len(rows), 3), np.nan)
        colours[have] = vertex_map.colours[rows[have]]
    return VertexMap(name, title, values, colours=colours, cmap=vertex_map.cmap, vmin=vertex_map.vmin,
                     vmax=vertex_map.vmax, legend=vertex_map.legend, label=vertex_map.label, extent=vertex_map.extent)


def _transformed(values: np.ndarray, transform: str) -> np.ndarray:
    if transform == "-log10":
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.log10(np.clip(values, 1e-300, None))
    return values


def _value_range(name: str, values: np.ndarray, n_layers: int) -> tuple[float, float]:
    if name == "set_size":
        return 1.0, float(max(n_layers, 2))
    if name == "positive":
        finite = values[np.isfinite(values)]
        return 0.0, float(max(finite.max(), 1e-6)) if finite.size else 1.0
    return 0.0, 1.0
