"""Flatmaps and inflated views: size, non-blank panels, mask transparency, placement on the mesh."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cache.errors import InvalidInputError
from report_helpers import mesh, planted_fit
from stages.report.figures import render_inflated_map, render_map
from stages.report.flatmap import render_flatmap
from stages.report.maps import fit_maps
from stages.report.surface_values import place_on_mesh, vertex_rgba

DPI = 40


def _pixels(figure: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(float) / 255


def _panel(figure: Figure, pixels: np.ndarray, ax: object) -> np.ndarray:
    box = ax.get_window_extent()
    height = pixels.shape[0]
    return pixels[int(height - box.y1):int(height - box.y0), int(box.x0):int(box.x1)]


def _saturation(pixels: np.ndarray) -> np.ndarray:
    return pixels.max(axis=-1) - pixels.min(axis=-1)


def test_layer_flatmap_has_expected_size_and_both_hemispheres_drawn() -> None:
    fit = planted_fit()
    layer = next(m for m in fit_maps(fit) if m.name == "layer")
    figure = render_map(fit, layer, mesh("flat"))
    figure.set_dpi(DPI)
    pixels = _pixels(figure)
    width, height = figure.get_size_inches() * DPI
    assert pixels.shape[:2] == (round(height), round(width))
    panel = _panel(figure, pixels, figure.axes[0])
    for half in (panel[:, : panel.shape[1] // 2], panel[:, panel.shape[1] // 2:]):
        drawn = (half < 0.97).any(axis=-1).mean()
        assert drawn > 0.2                      # the sheet is there (grey underlay)
        assert (_saturation(half) > 0.3).mean() > 0.01  # and coloured vertices on it
    # planted hierarchy: blue (early layers) and red (late layers) both present
    blue = (panel[..., 2] - panel[..., 0] > 0.3).mean()
    red = (panel[..., 0] - panel[..., 2] > 0.3).mean()
    assert blue > 0.002 and red > 0.002


def test_masked_vertices_show_only_the_grey_underlay() -> None:
    flat = mesh("flat")
    values = {name: np.full(flat.hemisphere(name).n_vertices, np.nan) for name in ("lh", "rh")}
    figure = render_flatmap(flat, values, vmin=0, vmax=1)
    figure.set_dpi(DPI)
    panel = _panel(figure, _pixels(figure), figure.axes[0])
    assert (panel < 0.97).any(axis=-1).mean() > 0.3
    assert _saturation(panel).max() < 0.02  # nothing but greys


def test_inflated_views_each_panel_drawn() -> None:
    fit = planted_fit()
    layer = next(m for m in fit_maps(fit) if m.name == "layer")
    figure = render_inflated_map(fit, layer, mesh("inflated"))
    figure.set_dpi(DPI)
    pixels = _pixels(figure)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title().split()[0] for ax in panels] == ["lateral", "medial", "ventral", "posterior"]
    for ax in panels:
        panel = _panel(figure, pixels, ax)
        assert (panel < 0.97).any(axis=-1).mean() > 0.05, ax.get_title()
    # the occipital fit is visible from behind and from the medial side
    for ax in (panels[1], panels[3]):
        assert (_saturation(_panel(figure, pixels, ax)) > 0.25).mean() > 0.01, ax.get_title()


def test_place_on_mesh_fills_nan_and_drops_vertices_beyond_the_mesh() -> None:
    flat = mesh("flat")
    values = np.array([1.0, 2.0, 3.0, 4.0])
    placed = place_on_mesh(values, np.array(["lh", "rh", "lh", "lh"]), np.array([5, 7, 10242, 163841]), flat)
    assert placed["lh"].shape == (10242,) and placed["rh"].shape == (10242,)
    assert placed["lh"][5] == 1.0 and placed["rh"][7] == 2.0
    assert np.isnan(placed["lh"]).sum() == 10241 and np.isnan(placed["rh"]).sum() == 10241


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="hemisphere"):
        place_on_mesh(np.ones(2), np.array(["lh", "xx"]), np.array([0, 1]), mesh("flat"))
    with pytest.raises(InvalidInputError, match="differ in length"):
        place_on_mesh(np.ones(3), np.array(["lh", "lh"]), np.array([0, 1]), mesh("flat"))
    with pytest.raises(InvalidInputError, match="scalar, RGB or RGBA"):
        vertex_rgba(np.ones((4, 2)), cmap="viridis", vmin=0, vmax=1)
    inflated = mesh("inflated")
    values = {name: np.zeros(inflated.hemisphere(name).n_vertices) for name in ("lh", "rh")}
    with pytest.raises(InvalidInputError, match="flat"):
        render_flatmap(inflated, values)


def test_rgba_alpha_zero_is_transparent_in_vertex_colours() -> None:
    rgba = vertex_rgba(np.array([[1.0, 0, 0], [np.nan, 0, 0]]), cmap="viridis", vmin=0, vmax=1)
    np.testing.assert_allclose(rgba, [[1, 0, 0, 1], [0, 0, 0, 0]])


def test_draws_into_given_axes_without_touching_rcparams() -> None:
    import matplotlib as mpl

    before = dict(mpl.rcParams)
    figure = Figure()
    ax = figure.add_subplot()
    flat = mesh("flat")
    values = {name: np.linspace(0, 1, flat.hemisphere(name).n_vertices) for name in ("lh", "rh")}
    assert render_flatmap(flat, values, ax=ax, colorbar_label="x") is figure
    assert dict(mpl.rcParams) == before


def test_raster_locates_pixels_inside_their_faces() -> None:
    from stages.report.flatmap import hemisphere_offsets
    from stages.report.raster import sheet_raster

    flat = mesh("flat")
    offsets = hemisphere_offsets(flat)
    raster = sheet_raster(flat, offsets, width=200)
    left, right, bottom, top = raster.extent
    height, width = raster.shape
    step = (right - left) / width
    for name in ("lh", "rh"):
        pixels = raster.pixels[name]
        centres = np.stack([left + (pixels % width + 0.5) * step, bottom + (pixels // width + 0.5) * step], axis=1)
        corners = flat.hemisphere(name).coords[raster.faces[name], :2] + offsets[name]
        rebuilt = (raster.weights[name][:, :, None] * corners).sum(axis=1)
        np.testing.assert_allclose(rebuilt, centres, atol=1e-3 * (right - left))
    assert sheet_raster(flat, offsets, width=200) is raster  # cached per mesh and width
    assert len(set(raster.pixels["lh"]) & set(raster.pixels["rh"])) == 0
    with pytest.raises(InvalidInputError, match="shading"):
        render_flatmap(flat, {n: np.zeros(10242) for n in ("lh", "rh")}, shading="smooth")


def test_crop_zooms_onto_the_shown_vertices() -> None:
    fit = planted_fit()
    layer = next(m for m in fit_maps(fit) if m.name == "layer")
    whole = render_map(fit, layer, mesh("flat"), resolution=200).axes[0]
    cropped = render_map(fit, layer, mesh("flat"), resolution=200, crop=True).axes[0]
    width = np.diff(whole.get_xlim())[0]
    assert np.diff(cropped.get_xlim())[0] < 0.9 * width
    left = mesh("flat").lh.coords[fit.vertices["fsaverage_index"][fit.vertices["hemisphere"] == "lh"]]
    low, high = cropped.get_xlim()
    assert low < left[:, 0].min() and left[:, 0].max() < high  # the fit's vertices stay in view
