"""The HTML page: relative links, escaping, and a headless-Chromium load of a small real page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import build_config
from report_helpers import browser_tools, check_page_in_browser, mesh, planted_fit
from stages.report.charts import render_roi_summary
from stages.report.config import ReportConfig
from stages.report.figures import render_map
from stages.report.html import PageFigure, PageSection, PageTable, render_page
from stages.report.maps import fit_maps
from stages.report.summaries import score_hierarchy, summarise_rois


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.report.output import save_figure, save_table

    root = tmp_path_factory.mktemp("figures")
    fit = planted_fit()
    cfg = build_config(ReportConfig, {"dpi": 30, "resolution": 200, "formats": ["png", "svg"]})
    layer = next(m for m in fit_maps(fit) if m.name == "layer")
    summary = summarise_rois(fit)
    saved = {"layer": save_figure(render_map(fit, layer, mesh("flat"), resolution=200), root / "fit" / "layer", cfg=cfg),
             "chart": save_figure(render_roi_summary(summary, fit.layer_names, score=score_hierarchy(fit, summary)),
                                  root / "fit" / "roi_summary", cfg=cfg)}
    tables = save_table(summary, root / "fit" / "roi_summary")
    figures = [PageFigure(name, paths["png"].relative_to(root).as_posix(), "caption <b>",
                          {"svg": paths["svg"].relative_to(root).as_posix()}) for name, paths in saved.items()]
    section = PageSection(anchor="fit", title="toy <fit>", figures=figures,
                          tables=[PageTable("ROI summary", summary[["area", "n_vertices", "mean_layer"]],
                                            {"parquet": tables["parquet"].relative_to(root).as_posix()})],
                          metrics={"hierarchy": 0.98, "layers": 8}, provenance={"seed": 0, "path": "<x>"},
                          reproduce=["bddn figures"])
    (root / "index.html").write_text(render_page([section], title="report & test"), encoding="utf-8")
    return root / "index.html"


def test_page_links_are_relative_and_text_escaped(page: Path) -> None:
    text = page.read_text()
    assert 'src="fit/layer.png"' in text and 'href="fit/layer.svg"' in text and 'href="fit/roi_summary.parquet"' in text
    assert "toy &lt;fit&gt;" in text and "caption &lt;b&gt;" in text and "report &amp; test" in text
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")
    assert (page.parent / "fit" / "layer.svg").stat().st_size > 1000


def test_table_and_metrics_are_shown(page: Path) -> None:
    text = page.read_text()
    assert "<th>area</th>" in text and "<th>mean_layer</th>" in text
    assert text.count("<td>V") == 4 and "<td>FFA</td>" in text and "<td>hierarchy</td>" in text


@pytest.mark.browser
@pytest.mark.skipif(browser_tools() is None, reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")
def test_page_loads_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    assert check_page_in_browser(page, tmp_path) == 2


def test_report_config_refuses_bad_values() -> None:
    from cache.errors import ConfigError

    with pytest.raises(ConfigError, match="png"):
        ReportConfig(formats=("svg",))
    with pytest.raises(ConfigError, match="dpi"):
        ReportConfig(dpi=5)
    with pytest.raises(ConfigError, match="space_extent"):
        ReportConfig(space_extent=1.5)
    assert np.isclose(build_config(ReportConfig, {"dpi": 72}).dpi, 72)
