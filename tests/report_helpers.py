"""Shared builders for the report tests: fsaverage5 meshes and a fit with a planted hierarchy."""

from __future__ import annotations

from functools import lru_cache
import dataclasses
from pathlib import Path

import numpy as np

from stages.fit.result import FitResult, layer_summary, layer_weight_column
from stages.mesh import CorticalMesh

#: (ROI label, hierarchy rank, pial y range) of the planted fit, posterior to anterior.
PLANTED_ROIS = (("V1v", 1, (-200, -96)), ("V2d", 2, (-96, -90)), ("V3v", 3, (-90, -84)), ("hV4", 4, (-84, -78)),
                ("FFA-1", 5, (-78, -66)), ("PPA", 5, (-66, -54)))
N_LAYERS = 8


@lru_cache(maxsize=None)
def mesh(kind: str) -> CorticalMesh:
    """fsaverage5 ``kind`` mesh through the project's surface loader."""
    from pipeline.surfaces import load_mesh

    return load_mesh("fsaverage5", kind)


def planted_fit(*, seed: int = 0, subject: str = "subj01", model: str = "toy", shuffle: bool = False,
                noise: float = 0.4) -> FitResult:
    """A fit on the posterior fsaverage5 vertices whose selected layer rises along the hierarchy.

    The chosen layer of a vertex is ``1.5 * (rank - 1)`` plus Gaussian noise; ``shuffle``
    permutes the layer weights across vertices (destroying the hierarchy).
    """
    rng = np.random.default_rng(seed)
    pial = mesh("pial")
    hemispheres, indices = [], []
    for hemi in ("lh", "rh"):
        index = np.flatnonzero(pial.hemisphere(hemi).coords[:, 1] < PLANTED_ROIS[-1][2][1])
        hemispheres += [hemi] * len(index)
        indices.append(index)
    y = np.concatenate([pial.hemisphere(h).coords[i, 1] for h, i in zip(("lh", "rh"), indices)])
    edges = [low for _, _, (low, _) in PLANTED_ROIS[1:]]
    band = np.searchsorted(edges, y, side="right")
    columns = {"hemisphere": hemispheres, "fsaverage_index": np.concatenate(indices),
               "roi": [PLANTED_ROIS[b][0] for b in band], "rank": [PLANTED_ROIS[b][1] for b in band]}
    rank = np.asarray(columns["rank"], dtype=float)
    target = 1.5 * (rank - 1) + rng.normal(0, noise, len(rank))
    logits = -((np.arange(N_LAYERS)[None, :] - target[:, None]) ** 2) / (2 * 0.6**2)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    if shuffle:
        weights = weights[rng.permutation(len(weights))]
    n = len(rank)
    vertices = {"vertex": np.arange(n), "hemisphere": np.asarray(columns["hemisphere"]),
                "fsaverage_index": np.asarray(columns["fsaverage_index"], dtype=np.int64),
                "roi": np.asarray(columns["roi"]),
                "space_x": np.tanh(rng.normal(0, 0.5, n)).astype(np.float32),
                "space_y": np.tanh(rng.normal(0, 0.5, n)).astype(np.float32),
                "scale": rng.uniform(0, 1, n).astype(np.float32),
                "r2_test": rng.uniform(0, 0.6, n).astype(np.float32)}
    vertices.update({layer_weight_column(i): weights[:, i].astype(np.float32) for i in range(N_LAYERS)})
    vertices.update(layer_summary(weights))
    return FitResult(method="truth" if not shuffle else "shuffled", subject=subject, model=model,
                     layer_names=tuple(f"block{i}" for i in range(N_LAYERS)), vertices=vertices,
                     metrics={"mean_r2_test": 0.3}, config={"seed": seed}, provenance={"note": "test"})


def ranked_fit(n_layers: int, *, seed: int = 0, n_vertices: int = 60, model: str = "net",
             subject: str = "subj01") -> FitResult:
    """A fit of ``n_vertices`` vertices in V1, V2, V3, V4, FFA and no ROI whose layer weights deepen along that
    order, plus noise."""
    rng = np.random.default_rng(seed)
    areas = np.array(["V1v", "V2d", "V3v", "hV4", "FFA-1", ""])[np.arange(n_vertices) % 6]
    target = (np.arange(n_vertices) % 6) / 5 * (n_layers - 1) + rng.normal(0, 1.0, n_vertices)
    logits = -((np.arange(n_layers)[None, :] - target[:, None]) ** 2) / 2
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    vertices = {"vertex": np.arange(n_vertices), "hemisphere": np.where(np.arange(n_vertices) % 2, "rh", "lh"),
                "fsaverage_index": np.arange(n_vertices, dtype=np.int64), "roi": areas,
                "space_x": np.zeros(n_vertices, np.float32), "space_y": np.zeros(n_vertices, np.float32),
                "scale": rng.uniform(0, 1, n_vertices).astype(np.float32)}
    vertices.update({layer_weight_column(i): weights[:, i].astype(np.float32) for i in range(n_layers)})
    vertices.update(layer_summary(weights))
    return FitResult(method="factortopy", subject=subject, model=model,
                     layer_names=tuple(f"block{i}" for i in range(n_layers)), vertices=vertices)


def browser_tools() -> tuple[str, str] | None:
    """Paths of a Chromium binary and chromedriver, or None when either is missing."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def open_chromium(tmp_path: Path, *, width: int = 1280, height: int = 2000):
    """A headless Chromium session (selenium WebDriver) with browser and performance (network) logs.

    WebGL runs on Chromium's software renderer (SwiftShader), asked for explicitly: recent
    Chromium no longer falls back to it silently. The caller quits the driver.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_tools()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--window-size={width},{height}", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def wait_for_viewer(browser, timeout: float = 60.0) -> bool | None:
    """Wait until a viewer page has started (its data unpacked); returns ``bddnViewer.ready``."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda driver: driver.execute_script("return window.bddnViewer !== undefined"))
    return browser.execute_script("return window.bddnViewer.ready")


def console_errors(browser) -> list[dict]:
    """The browser console's error entries since the last call."""
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def requested_urls(browser) -> list[str]:
    """URLs of every network request the browser started since the last call (from the performance log)."""
    import json

    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def check_page_in_browser(page: Path, tmp_path: Path) -> int:
    """Open ``page`` in headless Chromium: every image loads, no console errors; saves a screenshot.

    The screenshot goes to ``tmp_path/<page folder>.png`` and, when ``BDDN_TEST_ARTEFACTS`` is
    set, is copied there. Returns the number of images.
    """
    browser = open_chromium(tmp_path)
    screenshot = tmp_path / f"{page.parent.name}.png"
    try:
        browser.get(page.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
        broken = [src for src, complete, width in images if not complete or width == 0]
        assert images and not broken, f"images that did not load: {broken}"
        errors = console_errors(browser)
        assert not errors, errors
        assert browser.save_screenshot(str(screenshot))
    finally:
        browser.quit()
    assert screenshot.stat().st_size > 5_000
    keep_artefact(screenshot, f"report_{page.parent.name}.png")
    return len(images)


def keep_artefact(path: Path, name: str) -> None:
    """Copy ``path`` to ``$BDDN_TEST_ARTEFACTS/name`` when that variable is set."""
    import os
    import shutil

    artefacts = os.environ.get("BDDN_TEST_ARTEFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artefacts) / name)


def with_statistics(fit, *, seed: int = 0):
    """``fit`` with q-values (a third of the vertices not significant), layer sets and test-R^2 replicates."""
    rng = np.random.default_rng(seed)
    n = fit.n_vertices
    q_values = np.where(rng.random(n) < 1 / 3, rng.uniform(0.2, 1.0, n), rng.uniform(0.0, 0.01, n))
    vertices = {**fit.vertices, "p_value": q_values / 2, "q_value": q_values,
                "layer_confidence": rng.uniform(0, 1, n).astype(np.float32),
                "layer_set_size": rng.integers(1, 4, n).astype(np.int32),
                "layer_set_size_sampling": np.ones(n, dtype=np.int32)}
    replicates = {"r2_test": (fit.vertices["r2_test"][None] + rng.normal(0, 0.05, (200, n))).astype(np.float32)}
    return dataclasses.replace(fit, vertices=vertices, replicates=replicates)
