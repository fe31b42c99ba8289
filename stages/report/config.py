"""Settings of stage three (figures, tables, exports), built by the CLI and written into the report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from cache.errors import ConfigError
from stages.fit.result import FitResult
from stages.report.clusters import ClusterConfig
from stages.report.colours import auto_space_extent

FORMATS = ("png", "svg", "pdf")


@dataclass(frozen=True)
class ReportConfig:
    """How the report is rendered.

    Attributes:
        formats: figure file formats; the first must be ``png`` (shown on the page).
        dpi: resolution of PNGs (and of the inflated views' meshes inside SVG/PDF).
        resolution: raster pixels across a single flatmap (grid panels get half).
        crop: zoom each fit's flatmaps onto its vertices (the comparison grid always shows whole sheets).
        inflated_maps: maps also drawn on the inflated surfaces (lateral, medial, ventral, posterior).
        space_extent: half-width (image units, 1 = the whole image) of the region the space
            map's colour square spans; ``None`` picks one for all fits drawn together
            (:func:`stages.report.colours.auto_space_extent`).
        clusters: channel clustering (20 clusters from 1000 k-means centroids by default).
        viewer: write the interactive viewer page (``viewer.html``) of each fit, average and difference.
        viewer_full_resolution: draw the viewer on the fits' own fsaverage order; by default it uses
            fsaverage5 (a page of a few MB; finer fits show their fsaverage5 subset).
        alpha: false discovery rate in (0, 1): when set, the maps (except significance and noise
            ceiling), ROI tables and hierarchy scores of fits with q-values keep only the vertices
            with ``q_value <= alpha``; ``None`` keeps every vertex.
    """

    formats: tuple[str, ...] = ("png",)
    dpi: int = 150
    resolution: int = 1200
    crop: bool = True
    inflated_maps: tuple[str, ...] = ("layer", "space")
    space_extent: float | None = None
    clusters: ClusterConfig = ClusterConfig()
    viewer: bool = True
    viewer_full_resolution: bool = False
    alpha: float | None = None

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats or self.formats[0] != "png":
            raise ConfigError(f"formats {list(self.formats)}: must start with 'png' and use only {', '.join(FORMATS)}")
        if not 30 <= self.dpi <= 1200:
            raise ConfigError(f"dpi {self.dpi} is outside 30..1200")
        if self.space_extent is not None and not 0.0 < self.space_extent <= 1.0:
            raise ConfigError(f"space_extent {self.space_extent} is outside (0, 1]")
        if self.alpha is not None and not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha {self.alpha} is outside (0, 1): it is the false discovery rate at which vertices "
                              f"count as significant, e.g. 0.05")
        if not 100 <= self.resolution <= 8000:
            raise ConfigError(f"resolution {self.resolution} is outside 100..8000 pixels")


def with_space_extent(cfg: ReportConfig, fits: Sequence[FitResult]) -> ReportConfig:
    """``cfg`` with a concrete ``space_extent``: the configured one, else one chosen for ``fits`` together
    (so every space map of one report, comparison grids included, uses the same colours)."""
    if cfg.space_extent is not None:
        return cfg
    extent = auto_space_extent([(fit.vertices["space_x"], fit.vertices["space_y"]) for fit in fits])
    return dataclasses.replace(cfg, space_extent=extent)
