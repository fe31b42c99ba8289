"""The viewer page's data: maps offered from the column-spec table, vertex placement, colours, size, errors."""

from __future__ import annotations

import base64
import json
import re
import zlib

import numpy as np
import pytest

from cache.errors import InvalidInputError
from report_helpers import N_LAYERS, mesh, planted_fit
from stages.fit.result import FitResult, layer_summary, layer_weight_column
from stages.report.colours import layer_colours
from stages.report.compare import align_vertices
from stages.report.maps import VertexMap
from stages.report.viewer import render_viewer, viewer_payload
from stages.report.viewer_maps import ViewerMap, readout_fields, viewer_maps

_DTYPES = {"f32": np.float32, "i32": np.int32, "u16": np.uint16, "u32": np.uint32, "u8": np.uint8}


def _decode(entry: dict) -> np.ndarray:
    """A packed array of the page, unpacked as the page's script does (inflate, then unshuffle the bytes)."""
    dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
    shuffled = np.frombuffer(zlib.decompress(base64.b64decode(entry["b64"])), dtype=np.uint8)
    return shuffled.reshape(dtype.itemsize, -1).T.copy().view(dtype).ravel()


def _payload(fit: FitResult, **kwargs) -> dict:
    return viewer_payload(fit, viewer_maps(fit, **kwargs), mesh("inflated"), mesh("flat"), title="t")


def test_uncertainty_columns_are_offered_when_present() -> None:
    fit = planted_fit()
    names = {m.map.name for m in viewer_maps(fit)}
    assert not names & {"layer_confidence", "layer_set_size", "q_value", "p_value"}
    rng = np.random.default_rng(0)
    q = rng.uniform(1e-6, 1, fit.n_vertices)
    fit.vertices.update({"layer_confidence": rng.uniform(0, 1, fit.n_vertices).astype(np.float32),
                         "layer_set_size": rng.integers(1, N_LAYERS + 1, fit.n_vertices),
                         "layer_set_size_sampling": np.ones(fit.n_vertices, dtype=np.int32),
                         "q_value": q.astype(np.float32)})
    maps = {m.map.name: m for m in viewer_maps(fit)}
    assert maps["layer_confidence"].group == "uncertainty" and (maps["layer_confidence"].map.vmin,
                                                                maps["layer_confidence"].map.vmax) == (0.0, 1.0)
    assert (maps["layer_set_size"].map.vmin, maps["layer_set_size"].map.vmax) == (1.0, float(N_LAYERS))
    assert (maps["layer_set_size_sampling"].map.vmin, maps["layer_set_size_sampling"].map.vmax) == (1.0, float(N_LAYERS))
    np.testing.assert_allclose(maps["q_value"].map.values, -np.log10(q.astype(np.float32)), rtol=1e-6)
    assert maps["q_value"].map.vmax == pytest.approx(-np.log10(q.astype(np.float32).min()), rel=1e-6)
    assert "p_value" not in maps
    fields = {f.name: f for f in readout_fields(fit)}
    np.testing.assert_array_equal(fields["q_value"].values, fit.vertices["q_value"])  # the readout shows q itself
    assert fields["layer_set_size"].digits == "int"
    payload = viewer_payload(fit, list(maps.values()), mesh("inflated"), mesh("flat"), title="t")
    readout = {item["name"]: item for item in payload["readout"]}
    np.testing.assert_array_equal(_decode(payload["arrays"][readout["layer_confidence"]["values"]]),
                                  fit.vertices["layer_confidence"])
    assert {"layer_confidence", "layer_set_size", "q_value"} <= {spec["name"] for spec in payload["maps"]}


def test_payload_places_every_row_and_paints_the_static_colours() -> None:
    fit = planted_fit()
    payload = _payload(fit, clusters=np.arange(fit.n_vertices) % 5)
    for hemi in ("lh", "rh"):
        rows = _decode(payload["hemis"][hemi]["rows"])
        assert len(rows) == mesh("inflated").hemisphere(hemi).n_vertices
        mine = np.flatnonzero(fit.vertices["hemisphere"] == hemi)
        np.testing.assert_array_equal(rows[fit.vertices["fsaverage_index"][mine]], mine)
        assert (rows >= 0).sum() == len(mine)
    layer = next(spec for spec in payload["maps"] if spec["name"] == "layer")
    rgba = _decode(layer["rgba"]).reshape(-1, 4)
    expected = layer_colours(fit.vertices["layer_argmax"], fit.vertices["layer_entropy"], N_LAYERS)
    np.testing.assert_array_equal(rgba[:, :3], np.round(255 * expected).astype(np.uint8))
    assert (rgba[:, 3] == 255).all()
    names = [spec["name"] for spec in payload["maps"]]
    assert names[:3] == ["layer", "relative_depth", "space"] and "clusters" in names
    assert sum(name.startswith("layer_weight_") for name in names) == N_LAYERS
    weights = _decode(payload["weights"]).reshape(fit.n_vertices, N_LAYERS)
    np.testing.assert_array_equal(weights, fit.layer_weights.astype(np.float32))
    assert payload["threshold"]["max"] == pytest.approx(float(np.max(fit.vertices["r2_test"])))


def test_truth_adds_its_maps_and_the_differences_on_shared_vertices() -> None:
    fit, truth = planted_fit(seed=1), planted_fit(seed=2)
    keep = np.arange(truth.n_vertices) % 2 == 0
    truth = FitResult(method="truth", subject=truth.subject, model=truth.model, layer_names=truth.layer_names,
                      vertices={name: np.asarray(values)[keep] for name, values in truth.vertices.items()})
    maps = {m.map.name: m for m in viewer_maps(fit, truth=truth)}
    depth = maps["minus_truth_diff_depth"].map.values
    assert np.isfinite(depth[keep]).all() and np.isnan(depth[~keep]).all()
    expected = (fit.vertices["layer_mean"][keep].astype(float) - truth.vertices["layer_mean"].astype(float)) / (N_LAYERS - 1)
    np.testing.assert_allclose(depth[keep], expected, rtol=1e-6)
    assert np.isnan(maps["truth_layer"].map.colours[~keep]).all()
    assert maps["truth_layer"].group == "planted truth" and maps["minus_truth_diff_scale"].group == "fit minus truth"


def test_identical_columns_are_stored_once_and_still_found() -> None:
    fit = planted_fit()
    fit.vertices["space_x"] = np.full(fit.n_vertices, np.nan, np.float32)  # a ridge fit has no sample point
    fit.vertices["space_y"] = np.full(fit.n_vertices, np.nan, np.float32)
    payload = _payload(fit)
    keys = payload["columns"]
    assert keys["space_x"] == keys["space_y"] and keys["space_x"] in payload["arrays"]
    assert np.isnan(_decode(payload["arrays"][keys["space_y"]])).all()
    np.testing.assert_array_equal(_decode(payload["arrays"][keys["vertex"]]), fit.vertices["vertex"])


def test_finer_fit_shows_its_fsaverage5_subset_and_says_so() -> None:
    fit = planted_fit()
    index = np.asarray(fit.vertices["fsaverage_index"]).copy()
    index[:10] += 200_000 - index[:10].max()
    fit.vertices["fsaverage_index"] = index
    payload = _payload(fit)
    assert payload["n_shown"] == fit.n_vertices - 10
    assert "10 of the fit's" in payload["note"] and "fsaverage5" in payload["note"]


def test_page_is_self_contained_and_under_six_megabytes_for_a_whole_cortex() -> None:
    rng = np.random.default_rng(0)
    n_layers, n = 20, mesh("inflated").lh.n_vertices
    weights = rng.dirichlet(np.ones(n_layers) * 0.3, size=2 * n)
    vertices = {"vertex": np.arange(2 * n), "hemisphere": np.repeat(["lh", "rh"], n),
                "fsaverage_index": np.tile(np.arange(n), 2), "roi": rng.choice(["V1", "V2", "FFA", ""], 2 * n),
                **{layer_weight_column(i): weights[:, i].astype(np.float32) for i in range(n_layers)},
                **layer_summary(weights)}
    for column in ("space_x", "space_y", "scale", "r2_test", "r2_val", "r2_test_nc", "r2_val_nc", "noise_ceiling",
                   "layer_confidence", "p_value", "q_value"):
        vertices[column] = rng.uniform(0, 1, 2 * n).astype(np.float32)
    vertices["layer_set_size"] = rng.integers(1, n_layers, 2 * n)
    fit = FitResult(method="factortopy", subject="s<1>", model="m", layer_names=tuple(f"l{i}" for i in range(n_layers)),
                    vertices=vertices, config={"grid": 8})
    maps = viewer_maps(fit, clusters=rng.integers(0, 20, 2 * n), truth=fit)
    page = render_viewer(fit, maps, mesh("inflated"), mesh("flat"), title="m / s<1> </script>")
    assert len(page.encode()) < 6_000_000
    assert "s&lt;1&gt;" in page and page.count("</script>") == 2  # the title cannot close the data block
    assert not re.search(r"https?:|//cdn|@import|url\(", page)
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == ["data:,"]
    data = page[page.index('id="viewer-data">') + 17:page.index("</script>")]
    assert json.loads(data.replace("<\\/", "</"))["grid"] == 8


def test_bad_inputs_are_refused() -> None:
    fit = planted_fit()
    with pytest.raises(InvalidInputError, match="inflated and a flat"):
        viewer_payload(fit, viewer_maps(fit), mesh("flat"), mesh("flat"), title="t")
    with pytest.raises(InvalidInputError, match="differ in vertex count"):
        viewer_payload(fit, viewer_maps(fit), mesh("pial"), _flat_with(3), title="t")
    short = ViewerMap("difference", VertexMap("x", "x", np.zeros(3)))
    with pytest.raises(InvalidInputError, match="has 3 values"):
        viewer_payload(fit, [short], mesh("inflated"), mesh("flat"), title="t")
    with pytest.raises(InvalidInputError, match="at least one map"):
        viewer_payload(fit, [], mesh("inflated"), mesh("flat"), title="t")


def _flat_with(n_vertices: int):
    from stages.mesh import CorticalMesh, HemisphereMesh

    hemi = {h: HemisphereMesh(h, "flat", np.zeros((n_vertices, 3), np.float32), np.array([[0, 1, 2]]))
            for h in ("lh", "rh")}
    return CorticalMesh("tiny", hemi["lh"], hemi["rh"])


def test_align_vertices_matches_a_plain_lookup() -> None:
    fit, other = planted_fit(seed=1), planted_fit(seed=2)
    order = np.random.default_rng(0).permutation(other.n_vertices)[: other.n_vertices // 2]
    other = FitResult(method="x", subject="s", model="m", layer_names=other.layer_names,
                      vertices={name: np.asarray(values)[order] for name, values in other.vertices.items()})
    lookup = {(h, int(i)): row for row, (h, i) in enumerate(zip(other.vertices["hemisphere"], other.vertices["fsaverage_index"]))}
    expected = [lookup.get((h, int(i)), -1) for h, i in zip(fit.vertices["hemisphere"], fit.vertices["fsaverage_index"])]
    np.testing.assert_array_equal(align_vertices(other, fit), expected)
