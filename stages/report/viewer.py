"""The interactive cortex viewer: one self-contained HTML page per fit (``viewer.html``).

The page holds the fsaverage inflated and flat surfaces of both hemispheres, the fit's
per-vertex table and its maps (:mod:`stages.report.viewer_maps`) as deflated, base64 typed
arrays in a JSON block (the browser inflates them with its own ``DecompressionStream``), and the drawing script ``viewer.js`` (WebGL 2, written for this page, shipped with
the package). It loads nothing else: no library, font or data from the network or from disk,
so it opens by double-click, offline, in any current browser.

A fit's vertices reach the mesh through their fsaverage index; lower icosahedral orders nest
as a prefix, so an fsaverage7 fit drawn on fsaverage5 shows its fsaverage5 subset (the page
says how many of its vertices that is).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import zlib
from importlib import resources
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps

from cache.errors import InvalidInputError
from stages.fit.result import FitResult
from stages.mesh import HEMISPHERES, CorticalMesh
from stages.report.colours import layer_colour_bar, layer_hue, space_colour_square
from stages.report.figures import roi_labels_on_mesh
from stages.report.flatmap import hemisphere_offsets, roi_boundaries
from stages.report.inflated import SEPARATE_VIEWS, VIEWS, project
from stages.report.surface_values import place_on_mesh, underlay_grey
from stages.report.viewer_maps import ReadoutField, ViewerMap, readout_fields

#: Column whose value the page's threshold slider compares with its cut-off.
THRESHOLD_COLUMN = "r2_test"
#: JSON escapes of the characters with meaning in HTML, for data embedded in a script element.
_JSON_IN_HTML = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def render_viewer(fit: FitResult, maps: Sequence[ViewerMap], inflated: CorticalMesh, flat: CorticalMesh, *,
                  title: str, note: str = "", provenance: dict[str, Any] | None = None) -> str:
    """The complete viewer page (an HTML string) of ``fit`` with ``maps`` on the given meshes.

    Args:
        fit: the per-vertex table read out at a pointed vertex.
        maps: from :func:`stages.report.viewer_maps.viewer_maps`, each with one value per fit vertex.
        inflated, flat: the same fsaverage order, ``inflated`` and ``flat`` kinds.
        title: page heading.
        note: a line under the heading (e.g. what the page compares).
        provenance: what produced the page (shown folded, as JSON).
    """
    payload = viewer_payload(fit, maps, inflated, flat, title=title, note=note)
    # <, > and & as JSON escapes: no label (ROI, subject, layer) can close the script element or read as markup
    data = json.dumps(payload, separators=(",", ":")).translate(_JSON_IN_HTML)
    script = resources.files("stages.report").joinpath("viewer.js").read_text(encoding="utf-8")
    record = json.dumps(provenance or {}, indent=1, default=str, sort_keys=True)
    parts = {"title": html.escape(title), "note": html.escape(payload["note"]), "style": _STYLE, "data": data,
             "script": script, "provenance": html.escape(record)}
    return re.sub(r"@@(\w+)@@", lambda match: parts[match.group(1)], _PAGE)


def viewer_payload(fit: FitResult, maps: Sequence[ViewerMap], inflated: CorticalMesh, flat: CorticalMesh, *,
                   title: str, note: str = "") -> dict[str, Any]:
    """The page's data as a JSON-ready dict (arrays as ``{"dtype", "b64"}``); see ``viewer.js`` for its use."""
    _check_meshes(inflated, flat)
    if not maps:
        raise InvalidInputError(f"{title}: the viewer needs at least one map")
    n_rows = fit.n_vertices
    arrays = _ArrayTable()
    hemis = {}
    rows = place_on_mesh(np.arange(n_rows), fit.vertices["hemisphere"], fit.vertices["fsaverage_index"], inflated,
                         fill=-1)
    labels = roi_labels_on_mesh(fit, inflated)
    index_dtype = "u16" if inflated.lh.n_vertices < 65_536 else "u32"
    offsets = hemisphere_offsets(flat)
    for name in HEMISPHERES:
        infl, sheet = inflated.hemisphere(name), flat.hemisphere(name)
        outlines = {kind: list(roi_boundaries(faces, labels[name]).values())
                    for kind, faces in (("inflated", infl.faces), ("flat", sheet.faces))}
        flat_coords = np.asarray(sheet.coords, np.float64).copy()
        flat_coords[:, 2] = 0.0
        hemis[name] = {"n": infl.n_vertices, "rows": _encode(np.asarray(rows[name], np.int32), "i32"),
                       "grey": _encode(np.round(255 * underlay_grey(infl)).astype(np.uint8), "u8"),
                       "inflated": _encode(infl.coords, "f32"), "flat": _encode(flat_coords, "f32"),
                       "inflated_faces": _encode(infl.faces, index_dtype), "flat_faces": _encode(sheet.faces, index_dtype),
                       **{f"{kind}_roi_edges": _encode(np.concatenate(edges) if edges else np.zeros((0, 2)), index_dtype)
                          for kind, edges in outlines.items()}}
    shown = sum(int((np.asarray(rows[name]) >= 0).sum()) for name in HEMISPHERES)
    roi_names, roi_codes = np.unique(np.asarray(fit.vertices["roi"]).astype(str), return_inverse=True)
    columns = {column: arrays.add(column, np.asarray(fit.vertices[column], dtype=np.float64))
               for column in ("vertex", "space_x", "space_y")}
    fields = readout_fields(fit)
    threshold = _threshold(fit, arrays)
    map_specs, cmaps = [], {}
    for entry in maps:
        map_specs.append(_map_spec(entry, arrays, cmaps, n_rows))
    layer_bar = layer_colour_bar(len(fit.layer_names), n_entropy=32)
    extent_note = (f"{n_rows - shown} of the fit's {n_rows} vertices lie beyond {inflated.mesh} and are not shown; "
                   if shown < n_rows else "")
    return {
        "title": title, "note": f"{note} {extent_note}".strip(), "mesh": inflated.mesh, "index_dtype": index_dtype,
        "layer_names": list(fit.layer_names),
        "layer_hues": np.round(255 * layer_hue(np.arange(len(fit.layer_names)), len(fit.layer_names))).astype(int).tolist(),
        "grid": _grid_size(fit), "n_rows": n_rows, "n_shown": shown, "hemis": hemis,
        "layouts": {**_view_layouts(inflated), "flat": _flat_layout(offsets)},
        "weights": _encode(fit.layer_weights, "f32"),
        "roi": {"names": roi_names.tolist(), "codes": _encode(roi_codes, "u16")},
        "readout": [_readout_spec(item, arrays) for item in fields],
        "maps": map_specs, "cmaps": {name: _encode(_lut(name), "u8") for name in cmaps},
        "legends": {"layer": _image(layer_bar), "space": _image(space_colour_square(64))},
        "threshold": threshold, "arrays": arrays.encoded, "columns": columns,
    }


class _ArrayTable:
    """Named float32 arrays of the page, each stored once even when several maps or fields share it."""

    def __init__(self) -> None:
        self.encoded: dict[str, dict[str, str]] = {}
        self._by_digest: dict[str, str] = {}

    def add(self, name: str, values: np.ndarray) -> str:
        """Store ``values`` (n_rows,) under ``name`` unless identical values are stored; returns the key used."""
        digest = hashlib.sha1(np.asarray(values, dtype="<f4").tobytes()).hexdigest()
        if digest in self._by_digest:
            return self._by_digest[digest]
        entry = _encode(values, "f32")
        key = name if name not in self.encoded else f"{name}_{len(self.encoded)}"
        self.encoded[key] = entry
        self._by_digest[digest] = key
        return key


def _map_spec(entry: ViewerMap, arrays: _ArrayTable, cmaps: dict[str, None], n_rows: int) -> dict[str, Any]:
    vertex_map = entry.map
    if len(vertex_map.values) != n_rows:
        raise InvalidInputError(f"map {vertex_map.name!r} has {len(vertex_map.values)} values; the table has {n_rows} rows")
    spec: dict[str, Any] = {"name": vertex_map.name, "title": vertex_map.title, "group": entry.group,
                            "legend": vertex_map.legend, "label": vertex_map.label, "extent": vertex_map.extent}
    if vertex_map.colours is not None:
        colours = np.asarray(vertex_map.colours, dtype=np.float64)
        valid = np.isfinite(colours).all(axis=1) & np.isfinite(np.asarray(vertex_map.values, np.float64))
        rgba = np.zeros((n_rows, 4), dtype=np.uint8)
        rgba[:, :3] = np.round(255 * np.clip(np.nan_to_num(colours), 0, 1))
        rgba[:, 3] = np.where(valid, 255, 0)
        spec["rgba"] = _encode(rgba, "u8")
        return spec
    cmaps[vertex_map.cmap] = None
    spec.update({"cmap": vertex_map.cmap, "vmin": float(vertex_map.vmin), "vmax": float(vertex_map.vmax)})
    if entry.layer is not None:
        spec["layer"] = entry.layer
    else:
        spec["values"] = arrays.add(vertex_map.name, np.asarray(vertex_map.values, dtype=np.float64))
    return spec


def _readout_spec(item: ReadoutField, arrays: _ArrayTable) -> dict[str, Any]:
    return {"name": item.name, "label": item.label, "digits": item.digits, "values": arrays.add(item.name, item.values)}


def _threshold(fit: FitResult, arrays: _ArrayTable) -> dict[str, Any] | None:
    """The slider's range over the fit's test R² (None when the table has none)."""
    if THRESHOLD_COLUMN not in fit.vertices:
        return None
    values = np.asarray(fit.vertices[THRESHOLD_COLUMN], dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = min(float(finite.min()), 0.0), max(float(finite.max()), 1e-3)
    return {"values": arrays.add(THRESHOLD_COLUMN, values), "min": low, "max": high, "step": (high - low) / 200}


#: What each view shows, printed over the canvas.
_CAPTIONS = {"lateral": "lateral: left hemisphere on the left", "medial": "medial: left hemisphere on the left",
             "ventral": "ventral: seen from below, anterior at the top, left hemisphere on the right",
             "posterior": "posterior: seen from behind, left hemisphere on the left"}


def _view_layouts(inflated: CorticalMesh) -> dict[str, Any]:
    """Per view, each hemisphere's camera basis (rows: right, up, towards the viewer), pivot and offset.

    Lateral and medial views turn each hemisphere to the camera and set them side by side (left on
    the left); ventral and posterior views keep anatomical positions, pulled apart, as the static views.
    """
    layouts = {}
    for view, cameras in VIEWS.items():
        parts, split = {}, view in SEPARATE_VIEWS
        if split:
            extents = {}
            for name in HEMISPHERES:
                coords = np.asarray(inflated.hemisphere(name).coords, np.float64)
                centre = coords.mean(axis=0)
                x = project(coords - centre, *cameras[name])[:, 0]
                extents[name] = (centre, x.min(), x.max())
            gap = 0.08 * (extents["lh"][2] - extents["lh"][1])
            for name, shift in (("lh", -gap / 2 - extents["lh"][2]), ("rh", gap / 2 - extents["rh"][1])):
                parts[name] = {"basis": _basis(*cameras[name]), "pivot": extents[name][0].tolist(),
                               "offset": [float(shift), 0.0, 0.0]}
        else:
            shifted = {}
            for name in HEMISPHERES:
                coords = np.asarray(inflated.hemisphere(name).coords, np.float64)
                gap = 0.05 * np.ptp(coords[:, 0])
                shifted[name] = -gap - coords[:, 0].max() if name == "lh" else gap - coords[:, 0].min()
            centre = np.concatenate([np.asarray(inflated.hemisphere(n).coords, np.float64) + [shifted[n], 0, 0]
                                     for n in HEMISPHERES]).mean(axis=0)
            for name in HEMISPHERES:
                parts[name] = {"basis": _basis(*cameras[name]), "pivot": (centre - [shifted[name], 0, 0]).tolist(),
                               "offset": [0.0, 0.0, 0.0]}
        layouts[view] = {"split": split, "hemis": parts, "caption": _CAPTIONS[view]}
    return layouts


def _flat_layout(offsets: dict[str, np.ndarray]) -> dict[str, Any]:
    identity = np.eye(3).ravel().tolist()
    return {"split": True, "caption": "flat: left hemisphere on the left", "hemis": {name: {"basis": identity, "pivot": [0.0, 0.0, 0.0],
                                            "offset": [float(offsets[name][0]), float(offsets[name][1]), 0.0]}
                                     for name in HEMISPHERES}}


def _basis(towards: Sequence[float], up: Sequence[float]) -> list[float]:
    """Row-major 3x3 matrix taking world coordinates to (right, up, towards the viewer), as :func:`project`."""
    return project(np.eye(3), towards, up).T.ravel().tolist()


def _grid_size(fit: FitResult) -> int | None:
    grid = fit.config.get("grid") if isinstance(fit.config, dict) else None
    return int(grid) if isinstance(grid, (int, float)) and grid >= 1 else None


def _lut(name: str) -> np.ndarray:
    return np.round(255 * colormaps[name](np.linspace(0, 1, 256))[:, :3]).astype(np.uint8)


def _image(rgb: np.ndarray) -> dict[str, Any]:
    return {"width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
            "rgb": _encode(np.round(255 * np.clip(rgb, 0, 1)).astype(np.uint8), "u8")}


_DTYPES = {"f32": np.float32, "i32": np.int32, "u32": np.uint32, "u16": np.uint16, "u8": np.uint8}


def _encode(values: np.ndarray, dtype: str) -> dict[str, str]:
    """``values`` as ``dtype`` (little-endian), bytes shuffled by position within an element, zlib-deflated,
    base64: floats' sign and exponent bytes then sit together, which deflates ~30 % smaller."""
    data = np.asarray(values).astype(np.dtype(_DTYPES[dtype]).newbyteorder("<")).ravel()
    shuffled = data.view(np.uint8).reshape(-1, data.itemsize).T.tobytes()
    return {"dtype": dtype, "b64": base64.b64encode(zlib.compress(shuffled, 6)).decode("ascii")}


def _check_meshes(inflated: CorticalMesh, flat: CorticalMesh) -> None:
    if inflated.lh.kind == "flat" or flat.lh.kind != "flat":
        raise InvalidInputError(f"the viewer needs an inflated and a flat mesh, got {inflated.lh.kind!r} and {flat.lh.kind!r}")
    for name in HEMISPHERES:
        if inflated.hemisphere(name).n_vertices != flat.hemisphere(name).n_vertices:
            raise InvalidInputError(f"inflated ({inflated.mesh}) and flat ({flat.mesh}) {name} meshes differ in vertex "
                                    "count; load both of one fsaverage order")


_STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, sans-serif; font-size: 13px; color: #222; display: flex; flex-direction: column; height: 100vh; }
header { padding: 6px 12px; border-bottom: 1px solid #ddd; } header h1 { font-size: 15px; margin: 0; }
header p { margin: 2px 0 0; color: #555; font-size: 12px; }
main { flex: 1; display: flex; min-height: 0; }
#stage { flex: 1; position: relative; min-width: 0; }
#cortex { width: 100%; height: 100%; display: block; cursor: crosshair; touch-action: none; }
#marker { position: absolute; width: 10px; height: 10px; border: 2px solid #000; border-radius: 50%; pointer-events: none; }
#marker.pinned { border-color: #d62728; }
#caption { position: absolute; left: 8px; top: 6px; color: #444; font-size: 12px; pointer-events: none; }
#help { position: absolute; left: 8px; bottom: 6px; color: #666; font-size: 11px; pointer-events: none; }
#nogl { position: absolute; inset: 30% 10%; font-size: 15px; }
aside { width: 340px; overflow-y: auto; border-left: 1px solid #ddd; padding: 8px 10px; }
aside h2 { font-size: 12px; text-transform: uppercase; color: #666; margin: 10px 0 4px; }
button { font-size: 12px; margin: 1px; padding: 2px 7px; border: 1px solid #bbb; background: #f6f6f6; border-radius: 3px; cursor: pointer; }
button.on { background: #333; color: #fff; border-color: #333; } button:disabled { opacity: 0.4; cursor: default; }
select { width: 100%; font-size: 12px; } input[type=range] { width: 210px; vertical-align: middle; }
#legend-text { color: #555; font-size: 11px; margin: 0; }
#readout table { border-collapse: collapse; width: 100%; } #readout td { padding: 1px 4px; border-bottom: 1px solid #eee; }
#readout td:last-child { text-align: right; font-variant-numeric: tabular-nums; }
#ro-bars { width: 300px; height: 90px; } #ro-bars text { font-size: 10px; }
#ro-bars .argmax { stroke: #000; stroke-width: 1.5; }
details pre { font-size: 10px; white-space: pre-wrap; word-break: break-all; }
.ro-space { display: flex; gap: 8px; align-items: center; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><title>@@title@@</title><style>@@style@@</style></head><body>
<header><h1>@@title@@</h1><p>@@note@@</p></header>
<main><div id="stage"><canvas id="cortex"></canvas><div id="marker" hidden></div>
<div id="caption"></div><div id="help">drag: rotate · shift-drag or right-drag: pan · wheel: zoom · hover: read a vertex · click: pin it</div>
<div id="nogl" hidden>This viewer draws with WebGL 2, which this browser has turned off or does not offer.</div></div>
<aside>
<h2>Surface</h2><button data-surface="inflated" class="on">inflated</button><button data-surface="flat">flat</button>
<h2>View</h2><button data-view="lateral">lateral</button><button data-view="medial">medial</button><button data-view="ventral">ventral</button><button data-view="posterior">posterior</button>
<h2>Map</h2><select id="map" aria-label="map"></select>
<canvas id="legend" width="300" height="104"></canvas><p id="legend-text"></p>
<h2>Display</h2><label><input type="checkbox" id="rois" checked> ROI outlines</label><br>
<label>R² (test) ≥ <input type="range" id="cut"> <span id="cut-value">off</span></label>
<h2>Vertex</h2>
<div id="readout" hidden>
<table><tr><td>hemisphere</td><td data-field="hemisphere"></td></tr><tr><td>fsaverage index</td><td data-field="fsaverage_index"></td></tr>
<tr><td>ROI</td><td data-field="roi"></td></tr></table>
<p class="ro-nodata" hidden>no data: this vertex is outside the fitted vertices</p>
<div class="ro-data"><table><tr><td>table row (vertex)</td><td data-field="vertex"></td></tr></table>
<h2>Layer weights</h2><svg id="ro-bars" viewBox="0 0 300 90"></svg>
<h2>Space</h2><div class="ro-space"><canvas id="ro-space" width="90" height="90"></canvas>
<span>x <b data-field="space_x"></b><br>y <b data-field="space_y"></b><br><small>image grid, top at the top</small></span></div>
<h2>Values</h2><table id="ro-values"></table></div></div>
<p id="ro-empty">Point at the surface to read a vertex.</p>
<details><summary>Provenance</summary><pre>@@provenance@@</pre></details>
</aside></main>
<script type="application/json" id="viewer-data">@@data@@</script>
<script>@@script@@</script>
</body></html>
"""
