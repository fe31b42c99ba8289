"""The viewer pages in a real browser: headless Chromium opens each page from ``file://``.

For a fit (with its planted truth), a subject average (of ridge fits: no image point) and a two-fit
difference: no console
error, no network request, a canvas that is not blank, a map switch that changes it, and
three vertices picked from the fit's ``vertices.parquet`` (one in V1, one in a higher area,
one outside the fit) pointed at with the mouse, whose readout must show exactly that row.
Needs Chromium, chromedriver and WebGL 2 (SwiftShader); skipped with the reason otherwise.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from report_helpers import (
    browser_tools, console_errors, keep_artefact, mesh, open_chromium, planted_fit, requested_urls, wait_for_viewer,
)
from stages.fit.result import FitResult, layer_weight_column
from stages.report.compare import average_fits
from stages.report.config import ReportConfig

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(
    browser_tools() is None, reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")]

CFG = ReportConfig()
#: Zoom applied around a vertex before pointing at it, so neighbouring vertices are far apart on screen.
ZOOM = 6.0


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (viewer page, vertices.parquet of the table it reads out)."""
    from pipeline.report.viewer_pages import write_difference_viewer, write_viewer

    root = tmp_path_factory.mktemp("viewers")
    meshes = (mesh("inflated"), mesh("flat"))
    fit = planted_fit(seed=1)
    fit.method = "factortopy"
    truth = planted_fit(seed=2, noise=0.1)
    rois = np.unique(fit.vertices["roi"], return_inverse=True)[1]
    out = {}
    folder = fit.save(root / "fits" / "toy" / "subj01")
    out["fit"] = (write_viewer(root / "fit" / "viewer.html", FitResult.load(folder), meshes, CFG, clusters=rois,
                               truth=truth), folder / "vertices.parquet")
    ridge = [planted_fit(seed=seed, subject=subject) for seed, subject in ((4, "subj01"), (3, "subj02"))]
    for each in ridge:  # ridge fits choose no image point: the average's space columns are NaN
        each.method = "ridge"
        each.vertices["space_x"] = np.full(each.n_vertices, np.nan, np.float32)
        each.vertices["space_y"] = np.full(each.n_vertices, np.nan, np.float32)
    average = average_fits(ridge)
    folder = average.save(root / "fits" / "toy" / "average")
    out["average"] = (write_viewer(root / "average" / "viewer.html", FitResult.load(folder), meshes, CFG),
                      folder / "vertices.parquet")
    difference = write_difference_viewer(root / "difference" / "viewer.html", truth, fit, meshes, CFG)
    out["difference"] = (difference, root / "fits" / "toy" / "subj01" / "vertices.parquet")  # truth and fit share every vertex
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    driver = open_chromium(tmp_path_factory.mktemp("chromium"), width=1280, height=800)
    try:
        driver.get("about:blank")
        if not driver.execute_script("return !!document.createElement('canvas').getContext('webgl2')"):
            pytest.skip("headless Chromium offers no WebGL 2 here (its software renderer SwiftShader is missing), "
                        "so the viewer cannot be drawn")
        yield driver
    finally:
        driver.quit()


def _check_inflated_picking(browser) -> None:
    """On the inflated lateral view, the vertex read at a pointed spot lies under the pointer (within a
    triangle's size) and in the hemisphere drawn there."""
    from selenium.webdriver.common.action_chains import ActionChains

    browser.execute_script("bddnViewer.setView('lateral'); bddnViewer.draw();")
    canvas = browser.find_element("id", "cortex")
    width, height = canvas.size["width"], canvas.size["height"]
    for fraction, hemi in ((0.2, "lh"), (0.8, "rh")):
        x, y = int(width * fraction), height // 2
        ActionChains(browser).move_to_element_with_offset(canvas, x - width // 2, y - height // 2).perform()
        readout = _readout(browser)
        assert readout["hemisphere"] == hemi, readout
        located = browser.execute_script(f"return bddnViewer.locate('{hemi}', {readout['fsaverage_index']});")
        assert np.hypot(located[0] - x, located[1] - y) < 12, (located, x, y)


def _canvas_pixels(browser) -> np.ndarray:
    from PIL import Image

    canvas = browser.find_element("id", "cortex")
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"), dtype=np.float64)


def _point_at(browser, hemi: str, index: int) -> None:
    """Zoom onto the vertex on the flat view and move the mouse onto it."""
    from selenium.webdriver.common.action_chains import ActionChains

    browser.execute_script("bddnViewer.setSurface('flat'); bddnViewer.draw();")
    browser.execute_script(f"bddnViewer.focus('{hemi}', {index}, {ZOOM});")
    x, y, _ = browser.execute_script(f"return bddnViewer.locate('{hemi}', {index});")
    canvas = browser.find_element("id", "cortex")
    size = canvas.size
    ActionChains(browser).move_to_element_with_offset(canvas, 0, 0).perform()
    ActionChains(browser).move_to_element_with_offset(
        canvas, int(round(x - size["width"] / 2)), int(round(y - size["height"] / 2))).perform()
    browser.execute_script("bddnViewer.setSurface('flat');")  # back to the whole sheets for the next vertex


def _readout(browser) -> dict[str, str | None]:
    return browser.execute_script("""
        const out = {};
        document.querySelectorAll('#readout [data-field]').forEach(el => { out[el.dataset.field] = el.getAttribute('data-value'); });
        out.has_data = document.getElementById('readout').getAttribute('data-has-data');
        out.bars = Array.from(document.querySelectorAll('#ro-bars rect')).map(r => r.getAttribute('data-value'));
        out.argmax = document.querySelector('#ro-bars rect.argmax')?.getAttribute('data-layer');
        return out;""")


def _chosen_vertices(table: pd.DataFrame, flat_faces: dict[str, np.ndarray]) -> dict[str, tuple[str, int, int | None]]:
    """(hemisphere, fsaverage index, table row) of a V1 vertex, a higher-area vertex and one outside the table."""
    on_sheet = {(h, int(i)) for h in flat_faces for i in np.unique(flat_faces[h])}
    rows = [r for r in range(len(table)) if (table["hemisphere"][r], int(table["fsaverage_index"][r])) in on_sheet]
    v1 = next(r for r in rows if str(table["roi"][r]).startswith("V1"))
    higher = next(r for r in rows[::-1] if str(table["roi"][r]) in ("FFA-1", "PPA"))
    covered = set(zip(table["hemisphere"], table["fsaverage_index"].astype(int)))
    outside = next(i for i in sorted(np.unique(flat_faces["rh"]))[::-1] if ("rh", int(i)) not in covered)
    return {"V1": (table["hemisphere"][v1], int(table["fsaverage_index"][v1]), v1),
            "higher": (table["hemisphere"][higher], int(table["fsaverage_index"][higher]), higher),
            "outside": ("rh", int(outside), None)}


def _check_row(readout: dict, table: pd.DataFrame, row: int, n_layers: int, label: str) -> None:
    expected = table.iloc[row]
    assert readout["has_data"] == "1", label
    assert readout["hemisphere"] == expected["hemisphere"] and int(readout["fsaverage_index"]) == expected["fsaverage_index"]
    assert readout["roi"] == expected["roi"] and int(float(readout["vertex"])) == expected["vertex"], label
    weights = [float(np.float32(expected[layer_weight_column(i)])) for i in range(n_layers)]
    assert [float(v) for v in readout["bars"]] == weights, label
    assert int(readout["argmax"]) == int(np.argmax(weights)), label
    for column in ("space_x", "space_y", "scale", "r2_test", "layer_mean", "n_subjects"):
        if column in table:
            shown, stored = float(readout[column]), float(np.float32(expected[column]))
            assert shown == stored or (np.isnan(shown) and np.isnan(stored)), (label, column, shown, stored)


@pytest.mark.parametrize("name", ["fit", "average", "difference"])
def test_viewer_page_in_headless_chromium(pages: dict, browser, tmp_path: Path, name: str) -> None:
    from selenium.webdriver.support.ui import Select

    page, table_path = pages[name]
    table = pd.read_parquet(table_path)
    browser.get_log("performance")
    browser.get(page.as_uri())
    assert wait_for_viewer(browser) is True
    assert not console_errors(browser)
    assert [url for url in requested_urls(browser) if url != page.as_uri()] == []
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    before = _canvas_pixels(browser)
    assert before.std() > 10, "the canvas is blank"
    screenshot = tmp_path / f"viewer_{name}.png"
    browser.save_screenshot(str(screenshot))
    keep_artefact(screenshot, screenshot.name)
    options = [o.get_attribute("value") for o in browser.find_elements("css selector", "#map option")]
    other = next(value for value in options if value in ("space", "minus_truth_diff_scale", "diff_depth") and value != options[0])
    Select(browser.find_element("id", "map")).select_by_value(other)
    after = _canvas_pixels(browser)
    assert np.abs(after - before).mean() > 1.0, f"switching to {other} left the canvas unchanged"

    _check_inflated_picking(browser)
    n_layers = sum(1 for column in table if column.startswith("layer_weight_"))
    flat = mesh("flat")
    for label, (hemi, index, row) in _chosen_vertices(table, {h: flat.hemisphere(h).faces for h in ("lh", "rh")}).items():
        _point_at(browser, hemi, index)
        readout = _readout(browser)
        if row is None:
            assert readout["has_data"] == "0" and readout["hemisphere"] == hemi
            assert int(readout["fsaverage_index"]) == index, label
        else:
            _check_row(readout, table, row, n_layers, f"{name} {label}")
    assert not console_errors(browser)
    assert [url for url in requested_urls(browser) if url != page.as_uri()] == []

