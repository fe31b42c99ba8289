"""Where viewer pages come from: the mesh they use and their atomic writing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipeline.report.viewer_pages import viewer_meshes, write_viewer
from report_helpers import mesh, planted_fit
from stages.report.config import ReportConfig


def test_viewer_uses_fsaverage5_unless_full_resolution_is_asked() -> None:
    finer = tuple(dataclasses.replace(mesh(kind), mesh="fsaverage") for kind in ("inflated", "flat"))
    inflated, flat = viewer_meshes(*finer, ReportConfig())
    assert (inflated.mesh, flat.mesh, inflated.lh.kind, flat.lh.kind) == ("fsaverage5", "fsaverage5", "inflated", "flat")
    assert viewer_meshes(*finer, ReportConfig(viewer_full_resolution=True)) == finer
    same = (mesh("inflated"), mesh("flat"))
    assert viewer_meshes(*same, ReportConfig()) == same


def test_full_resolution_page_says_so_and_leaves_no_partial_file(tmp_path: Path) -> None:
    finer = tuple(dataclasses.replace(mesh(kind), mesh="fsaverage") for kind in ("inflated", "flat"))
    fit = planted_fit()
    page = write_viewer(tmp_path / "fit" / "viewer.html", fit, finer, ReportConfig(viewer_full_resolution=True),
                        clusters=np.zeros(fit.n_vertices, int))
    text = page.read_text()
    assert "Full resolution (fsaverage): this page is large" in text
    assert "&quot;fit provenance&quot;" in text and "created_utc" in text and "&quot;viewer_full_resolution&quot;: true" in text
    assert [p.name for p in page.parent.iterdir()] == ["viewer.html"]
