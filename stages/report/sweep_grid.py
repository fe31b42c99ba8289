"""A sweep's comparison: one map across models and subjects, and each model's subject-average ROI profile.

The paper's main figure: rows = models, columns = subjects and their average (the
per-vertex mean over subjects, :func:`stages.report.compare.average_fits`), one figure
per map (layer, space, scale); and per model, the ROI layer profile and mean selected
layer of the subject average with its hierarchy score (:func:`stages.report.charts.render_roi_summary`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from cache.errors import InvalidInputError
from stages.fit.result import FitResult
from stages.mesh import CorticalMesh
from stages.report.charts import render_roi_summary
from stages.report.compare import average_fits
from stages.report.figures import render_map
from stages.report.maps import fit_maps
from stages.report.summaries import score_hierarchy, summarise_rois

AVERAGE = "average"


def model_averages(fits: Mapping[tuple[str, str], FitResult]) -> dict[str, FitResult]:
    """Per model with fits of two or more subjects, their subject average."""
    by_model: dict[str, list[FitResult]] = {}
    for (model, _), fit in fits.items():
        by_model.setdefault(model, []).append(fit)
    return {model: average_fits(group) for model, group in by_model.items() if len(group) >= 2}


def render_model_subject_grid(fits: Mapping[tuple[str, str], FitResult], flat: CorticalMesh, *, map_name: str,
                              models: Sequence[str], subjects: Sequence[str], panel_width: float = 3.2,
                              resolution: int = 400, space_extent: float = 1.0,
                              averages: Mapping[str, FitResult] | None = None) -> Figure:
    """Rows = ``models``, columns = ``subjects`` then their average: map ``map_name`` of each ``(model, subject)``
    fit, zoomed onto the fits' vertices (a missing fit, or one without that map, e.g. ridge's space map, leaves
    its panel empty and says so). ``averages``: :func:`model_averages` of ``fits`` when the caller has it already."""
    if not fits:
        raise InvalidInputError("a model x subject grid needs at least one fit")
    averages = model_averages(fits) if averages is None else averages
    columns = [*subjects, *([AVERAGE] if averages else [])]
    figure = Figure(figsize=(panel_width * len(columns), 0.85 * panel_width * len(models) + 0.4), layout="constrained")
    axes = figure.subplots(len(models), len(columns), squeeze=False)
    for row, model in zip(axes, models):
        for ax, column in zip(row, columns):
            fit = averages.get(model) if column == AVERAGE else fits.get((model, column))
            available = {} if fit is None else {m.name: m for m in fit_maps(fit, space_extent=space_extent)
                                                if np.isfinite(m.values).any()}
            if map_name not in available:
                ax.set_axis_off()
                ax.set_title(f"{model} / {column}: no {map_name}", fontsize=7)
                continue
            render_map(fit, available[map_name], flat, rois=False, title=f"{model} / {column}",
                       resolution=resolution, crop=True, ax=ax)
            ax.title.set_fontsize(8)
    figure.suptitle(f"{map_name}: models x subjects", fontsize=10)
    return figure


def render_model_roi_profiles(averages: Mapping[str, FitResult]) -> Figure:
    """One row per model: the subject average's ROI layer profile and mean selected layer, with its hierarchy score."""
    if not averages:
        raise InvalidInputError("ROI profiles per model need fits of two or more subjects of a model")
    summaries = {model: summarise_rois(fit) for model, fit in averages.items()}
    height = sum(0.3 * max(len(table), 1) + 1.2 for table in summaries.values())
    figure = Figure(figsize=(11, height), layout="constrained")
    rows = figure.subfigures(len(averages), 1, squeeze=False)[:, 0]
    for sub, (model, fit) in zip(rows, averages.items()):
        table = summaries[model]
        if table.empty:
            sub.suptitle(f"{model}: no vertex inside a named ROI", fontsize=9)
            continue
        axes = sub.subplots(1, 2, width_ratios=(3, 2))
        render_roi_summary(table, fit.layer_names, score=score_hierarchy(fit, table),
                           title=f"{model} ({fit.subject})", axes=axes)
    return figure
