"""The report end to end: ``bddn figures`` / ``bddn compare`` on a run root, the page's links, headless Chromium.

Rendering a whole run root takes tens of seconds on a small CPU, so the module is marked slow;
``test_report_page.py`` checks the page machinery quickly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

from pipeline.cli import main
from pipeline.synthetic.layout import write_planted_truth
from report_helpers import browser_tools, check_page_in_browser, planted_fit, with_statistics

pytestmark = pytest.mark.slow

FAST = ["--dpi", "30", "--resolution", "300", "--inflated-maps", "layer", "--no-progress"]


def _write_run_root(root: Path) -> tuple[Path, Path]:
    """A run root with one FactorTopy fit (with read-out weights) and the planted truth of its subject."""
    fit = with_statistics(planted_fit(seed=1))
    fit.method = "factortopy"
    folder = fit.save(root / "fits" / "toy" / "subj01")
    rng = np.random.default_rng(0)
    save_file({"readouts.0.weight": rng.normal(size=(fit.n_vertices, 16)).astype(np.float32)},
              str(folder / "weights.safetensors"))
    truth = planted_fit(seed=2, noise=0.1)
    subject = root / "synthetic" / "subj01"
    subject.mkdir(parents=True)
    write_planted_truth(subject, truth, {"seed": 2})
    return folder, subject


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    _write_run_root(root)
    preset = root / "report.toml"
    preset.write_text("[figures]\ndpi = 40\n[figures.clusters]\nn_clusters = 6\nn_centroids = 30\n")
    assert main(["--run-root", str(root), "figures", "--config", str(preset), *FAST]) == 0
    return root / "figures"


def test_report_holds_every_figure_table_and_export(report: Path) -> None:
    page = (report / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) >= 12
    for source in sources:
        assert not source.startswith(("/", "http")) and (report / source).is_file(), source
    fit_dir = report / "toy" / "subj01-factortopy"
    for name in ("layer", "layer_confidence", "layer_set_size", "significance", "space", "scale", "r2_test", "clusters",
                 "layer_weights", "inflated_layer", "roi_summary", "difference_vs_truth"):
        assert (fit_dir / f"{name}.png").is_file(), name
    assert (fit_dir / "gifti" / "clusters.lh.func.gii").is_file()
    assert (report / "toy" / "subj01-truth" / "layer.png").is_file()
    for slug in ("toy/subj01-factortopy", "toy/subj01-truth"):  # a viewer per fit and truth, linked from the page
        assert (report / slug / "viewer.html").stat().st_size > 100_000 and f'href="{slug}/viewer.html"' in page
    fit_viewer = (fit_dir / "viewer.html").read_text()
    assert '"name":"minus_truth_diff_depth"' in fit_viewer and '"name":"clusters"' in fit_viewer
    scores = pq.read_table(report / "hierarchy_scores.parquet").to_pandas()
    truth = scores[scores["method"] == "truth"].iloc[0]
    assert truth["hierarchy_spearman"] > 0.9
    assert "hierarchy_spearman" in (report / "hierarchy_scores.md").read_text()
    fit_row = scores[scores["method"] == "factortopy"].iloc[0]
    assert fit_row["hierarchy_low"] <= fit_row["hierarchy_spearman"] + 1e-9 <= fit_row["hierarchy_high"] + 2e-9
    assert fit_row["significant"] > 0
    rois = pq.read_table(fit_dir / "roi_summary.parquet").to_pandas()
    assert {"mean_layer_low", "mean_layer_high", "r2_test_low", "r2_test_high", "n_significant"} <= set(rois.columns)
    assert "significant at q ≤ 0.05 (FDR)" in page and "95 % interval" in page
    assert "Provenance" in page and "bddn synth --subjects 1 --model toy" in page
    config = json.loads((report / "report.json").read_text())["config"]
    assert config["dpi"] == 30 and config["clusters"]["n_clusters"] == 6  # flag over preset over default
    assert 0.1 <= config["space_extent"] <= 1.0  # the extent chosen for these fits is recorded
    assert not list(report.rglob(".*partial*"))


def test_compare_writes_grid_and_difference(report: Path, tmp_path: Path, capsys) -> None:
    root = report.parent
    out = tmp_path / "cmp"
    status = main(["--run-root", str(root), "compare", str(root / "synthetic" / "subj01"),
                   str(root / "fits" / "toy" / "subj01"), "--out", str(out), "--dpi", "30", "--resolution", "300", "--maps", "layer,scale"])
    assert status == 0
    assert (out / "grid.png").is_file() and (out / "difference.png").is_file()
    assert "hierarchy score: " in capsys.readouterr().out and (out / "hierarchy_scores.md").is_file()
    viewer = (out / "difference" / "viewer.html").read_text()
    assert '"name":"diff_depth"' in viewer and "toy / subj01 (factortopy) minus toy / subj01 (truth)" in viewer
    bare = tmp_path / "bare"
    assert main(["--run-root", str(root), "compare", str(root / "synthetic" / "subj01"), str(root / "fits" / "toy" / "subj01"),
                 "--out", str(bare), "--dpi", "30", "--resolution", "300", "--maps", "layer", "--no-viewer"]) == 0
    assert (bare / "difference.png").is_file() and not list(bare.rglob("*.html"))


def test_subject_averages_get_a_viewer(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed, subject in ((1, "subj01"), (3, "subj02")):
        fit = planted_fit(seed=seed, subject=subject)
        fit.method = "ridge"
        fit.save(root / "fits" / "toy" / f"{subject}-ridge")
    assert main(["--run-root", str(root), "figures", *FAST, "--inflated-maps", "", "--workers", "2"]) == 0
    page = (root / "figures" / "index.html").read_text()
    assert 'href="average/toy-ridge/viewer.html"' in page
    viewer = (root / "figures" / "average" / "toy-ridge" / "viewer.html").read_text()
    assert '"name":"n_subjects"' in viewer and "average of 2" in viewer
    # rendered in two processes, the fits' sections keep the inputs' order and each has its files
    assert page.index('id="toy-subj01-ridge"') < page.index('id="toy-subj02-ridge"')
    for subject in ("subj01", "subj02"):
        assert (root / "figures" / "toy" / f"{subject}-ridge" / "viewer.html").is_file()


def test_fits_render_in_parallel_only_when_worth_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.report import output

    assert output.figure_workers(output.PARALLEL_MIN_FITS - 1) == 1
    monkeypatch.setattr(output.os, "cpu_count", lambda: 2)
    assert output.figure_workers(5) in (1, 2)   # 1 only where memory is short
    monkeypatch.setattr(output.os, "cpu_count", lambda: 64)
    assert 1 <= output.figure_workers(5) <= 5
    assert main(["figures", "--workers", "0"]) == 2


def test_alpha_keeps_significant_vertices_only(report: Path, tmp_path: Path) -> None:
    root = report.parent
    fit = root / "fits" / "toy" / "subj01"
    assert main(["--run-root", str(root), "figures", str(fit), "--alpha", "0.05", *FAST]) == 0
    page = (report / "index.html").read_text()
    assert "significant at q ≤ 0.05 only" in page
    rois = pq.read_table(report / "toy" / "subj01-factortopy" / "roi_summary.parquet").to_pandas()
    np.testing.assert_array_equal(rois["n_vertices"], rois["n_significant"])


@pytest.mark.browser
@pytest.mark.skipif(browser_tools() is None, reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)")
def test_full_report_loads_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    assert check_page_in_browser(report / "index.html", tmp_path) >= 12
