"""Interaction speed of the viewer page in headless Chromium (software WebGL) at fsaverage5.

Builds a viewer page of a whole-cortex fsaverage5 fit (20,484 vertices, ``--layers`` layers,
every score and uncertainty column, channel clusters and a planted truth: the largest page a
fsaverage5 fit makes), or measures a given page (``--page runs/figures/.../viewer.html``), and
times inside the page:

* map switch: recolour every vertex, redraw, wait for the GPU (``bddnViewer.setMap``), over
  every map; baseline: a redraw alone, measured in the same run;
* pointing: a pointer-move event at a random spot on the cortex through to the updated
  readout (pick + DOM update + layout); baseline: the same event on the empty corner of the
  canvas (the pick's search through every triangle, no readout).

Prints medians and ratios (and the targets: switch < 500 ms, pointing < 50 ms).
Usage: ``python bench/viewer.py [--page PAGE] [--layers 20] [--points 200]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.surfaces import load_mesh  # noqa: E402
from stages.fit.result import FitResult, layer_summary, layer_weight_column  # noqa: E402
from stages.report.viewer import render_viewer  # noqa: E402
from stages.report.viewer_maps import viewer_maps  # noqa: E402

_POINT = """
const canvas = document.getElementById('cortex'), rect = canvas.getBoundingClientRect();
const readout = document.getElementById('readout'), times = [], rng = (i) => ((i * 2654435761) % 4294967296) / 4294967296;
for (let i = 0; i < arguments[0]; i++) {
  const x = arguments[1] ? rect.left + rect.width * (0.15 + 0.7 * rng(2 * i + 1)) : rect.left + 2;
  const y = arguments[1] ? rect.top + rect.height * (0.3 + 0.4 * rng(2 * i + 2)) : rect.top + 2;
  const start = performance.now();
  canvas.dispatchEvent(new PointerEvent('pointermove', {clientX: x, clientY: y, bubbles: true}));
  void readout.offsetHeight;
  times.push(performance.now() - start);
}
return times;"""


def whole_cortex_fit(n_layers: int, seed: int = 0) -> FitResult:
    """A fit covering every fsaverage5 vertex with random selections, scores and uncertainty columns."""
    rng = np.random.default_rng(seed)
    n = load_mesh("fsaverage5", "inflated").lh.n_vertices
    weights = rng.dirichlet(np.full(n_layers, 0.3), size=2 * n)
    vertices = {"vertex": np.arange(2 * n), "hemisphere": np.repeat(["lh", "rh"], n),
                "fsaverage_index": np.tile(np.arange(n), 2), "roi": rng.choice(["V1", "V2", "V3", "hV4", "FFA", ""], 2 * n),
                **{layer_weight_column(i): weights[:, i].astype(np.float32) for i in range(n_layers)},
                **layer_summary(weights), "layer_set_size": rng.integers(1, n_layers + 1, 2 * n)}
    for column in ("space_x", "space_y", "scale", "r2_test", "r2_val", "r2_test_nc", "r2_val_nc", "noise_ceiling",
                   "layer_confidence", "p_value", "q_value"):
        vertices[column] = rng.uniform(0, 1, 2 * n).astype(np.float32)
    return FitResult(method="factortopy", subject="bench", model="bench", vertices=vertices, config={"grid": 8},
                     layer_names=tuple(f"layer{i}" for i in range(n_layers)))


def build_page(folder: Path, n_layers: int) -> Path:
    fit = whole_cortex_fit(n_layers)
    truth = whole_cortex_fit(n_layers, seed=1)
    truth.method = "truth"
    maps = viewer_maps(fit, clusters=np.random.default_rng(2).integers(0, 20, fit.n_vertices), truth=truth)
    page = folder / "viewer.html"
    page.write_text(render_viewer(fit, maps, load_mesh("fsaverage5", "inflated"), load_mesh("fsaverage5", "flat"),
                                  title="bench: whole-cortex fsaverage5 fit"), encoding="utf-8")
    return page


def measure(page: Path, n_points: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from report_helpers import browser_tools, open_chromium, wait_for_viewer

    if browser_tools() is None:
        raise SystemExit("needs chromium and chromedriver")
    with tempfile.TemporaryDirectory() as profile:
        browser = open_chromium(Path(profile), width=1280, height=800)
        try:
            start = time.perf_counter()
            browser.get(page.as_uri())
            if wait_for_viewer(browser) is not True:
                raise SystemExit(f"{page}: the viewer did not start (WebGL 2 missing?)")
            loaded = time.perf_counter() - start
            names = browser.execute_script("return bddnViewer.maps()")
            switches = [browser.execute_script(f"return bddnViewer.setMap({name!r})") for name in names * 2]
            redraws = [browser.execute_script("return bddnViewer.draw()") for _ in names * 2]
            browser.execute_script("bddnViewer.setMap('layer'); bddnViewer.setView('lateral'); bddnViewer.draw();")
            pointing = browser.execute_script(_POINT, n_points, True)
            idle = browser.execute_script(_POINT, n_points, False)
        finally:
            browser.quit()
    return {"load_s": loaded, "maps": len(names), "switch_ms": float(np.median(switches)),
            "switch_max_ms": float(np.max(switches)), "redraw_ms": float(np.median(redraws)),
            "point_ms": float(np.median(pointing)), "point_p95_ms": float(np.percentile(pointing, 95)),
            "idle_event_ms": float(np.median(idle))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", type=Path, default=None, help="an existing viewer.html (default: build one)")
    parser.add_argument("--layers", type=int, default=20, help="layers of the built page's fit")
    parser.add_argument("--points", type=int, default=200, help="pointer moves to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        page = args.page.resolve() if args.page else build_page(Path(folder), args.layers)
        size = page.stat().st_size
        result = measure(page, args.points)
    print(f"page: {page.name if args.page is None else page}, {size / 1e6:.2f} MB, started in {result['load_s']:.2f} s")
    print(f"map switch: median {result['switch_ms']:.1f} ms (max {result['switch_max_ms']:.1f}) over {result['maps']} maps x 2; "
          f"redraw alone {result['redraw_ms']:.1f} ms; ratio switch/redraw {result['switch_ms'] / result['redraw_ms']:.2f}; "
          f"target 500 ms: {result['switch_max_ms'] / 500:.2f} of it")
    print(f"pointing: median {result['point_ms']:.2f} ms (p95 {result['point_p95_ms']:.2f}); same event on the empty corner "
          f"{result['idle_event_ms']:.2f} ms; ratio {result['point_ms'] / max(result['idle_event_ms'], 1e-3):.1f}; "
          f"target 50 ms: {result['point_p95_ms'] / 50:.2f} of it")


if __name__ == "__main__":
    main()
