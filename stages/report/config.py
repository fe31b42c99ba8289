"""Settings of stage three (figures, tables, exports), built by the CLI and written into the report."""

from __future__ import annotations

from dataclasses import dataclass

from cache.errors import ConfigError
from stages.report.clusters import ClusterConfig

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
        clusters: channel clustering (20 clusters from 1000 k-means centroids by default).
    """

    formats: tuple[str, ...] = ("png",)
    dpi: int = 150
    resolution: int = 1200
    crop: bool = True
    inflated_maps: tuple[str, ...] = ("layer", "space")
    clusters: ClusterConfig = ClusterConfig()

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats or self.formats[0] != "png":
            raise ConfigError(f"formats {list(self.formats)}: must start with 'png' and use only {', '.join(FORMATS)}")
        if not 30 <= self.dpi <= 1200:
            raise ConfigError(f"dpi {self.dpi} is outside 30..1200")
        if not 100 <= self.resolution <= 8000:
            raise ConfigError(f"resolution {self.resolution} is outside 100..8000 pixels")
