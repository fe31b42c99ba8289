"""Writing the interactive viewer pages (``viewer.html``) of fits, subject averages and differences.

Each page is one self-contained file (:mod:`stages.report.viewer`); it is written under a
temporary name and renamed, so a page that exists is complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cache.jsondata import to_json_data
from cache.provenance import environment_record

from pipeline.runroot import safe_name
from pipeline.surfaces import load_mesh
from stages.fit.result import FitResult
from stages.mesh import CorticalMesh
from stages.report.compare import difference_maps, fit_label
from stages.report.config import ReportConfig
from stages.report.viewer import render_viewer
from stages.report.viewer_maps import viewer_maps

#: File name of a viewer page inside its folder.
VIEWER_PAGE = "viewer.html"
#: The mesh viewer pages use unless full resolution is asked for.
VIEWER_MESH = "fsaverage5"


def viewer_meshes(inflated: CorticalMesh, flat: CorticalMesh, cfg: ReportConfig) -> tuple[CorticalMesh, CorticalMesh]:
    """``(inflated, flat)`` meshes of the viewer pages: the report's own with ``viewer_full_resolution``,
    else fsaverage5 (the report's meshes when they already are)."""
    if cfg.viewer_full_resolution or inflated.mesh == VIEWER_MESH:
        return inflated, flat
    return load_mesh(VIEWER_MESH, "inflated"), load_mesh(VIEWER_MESH, "flat")


def average_viewer_path(root: Path, model: str, method: str) -> Path:
    """Where the viewer of ``model``'s subject average of ``method`` fits goes under a figures folder ``root``."""
    return root / "average" / f"{safe_name(model)}-{safe_name(method)}" / VIEWER_PAGE


def write_viewer(target: Path, fit: FitResult, meshes: tuple[CorticalMesh, CorticalMesh], cfg: ReportConfig, *,
                 clusters: np.ndarray | None = None, truth: FitResult | None = None, title: str | None = None,
                 note: str = "", extra: Sequence = ()) -> Path:
    """Write the viewer page of ``fit`` (with its planted ``truth``, channel ``clusters`` and ``extra`` maps
    when given) to ``target``; returns ``target``."""
    inflated, flat = meshes
    maps = viewer_maps(fit, clusters=clusters, truth=truth, space_extent=cfg.space_extent or 1.0, extra=extra)
    if cfg.viewer_full_resolution and inflated.mesh != VIEWER_MESH:
        note = f"{note} Full resolution ({inflated.mesh}): this page is large and slower to open.".strip()
    record = {"page": "bddn interactive viewer", "fit": fit_label(fit), "mesh": inflated.mesh,
              "maps": [entry.map.name for entry in maps], "report config": to_json_data(cfg),
              "fit config": fit.config, "fit provenance": fit.provenance, "environment": environment_record()}
    page = render_viewer(fit, maps, inflated, flat, title=title or fit_label(fit), note=note, provenance=record)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return target


def write_difference_viewer(target: Path, before: FitResult, after: FitResult,
                            meshes: tuple[CorticalMesh, CorticalMesh], cfg: ReportConfig) -> Path:
    """The viewer of ``after - before`` (:func:`stages.report.compare.difference_maps`) on their shared vertices;
    the readout shows ``after``'s values."""
    subset, differences = difference_maps(before, after)
    title = f"{fit_label(after)} minus {fit_label(before)}"
    return write_viewer(target, subset, meshes, cfg, title=title, extra=differences,
                        note=f"difference maps on the {subset.n_vertices} vertices both fits share; the other maps and "
                             f"the readout show {fit_label(after)}")
