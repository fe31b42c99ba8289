"""Charts of the ROI summaries: the layer-weight profile of every area and its mean selected layer."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cache.errors import InvalidInputError
from stages.report.colours import LAYER_WEIGHT_CMAP, layer_hue
from stages.report.summaries import HierarchyScore


def render_roi_summary(summary: pd.DataFrame, layer_names: Sequence[str], *, score: HierarchyScore | None = None,
                       title: str = "", axes: Sequence[Axes] | None = None) -> Figure:
    """Left: heat map of each area's mean layer weights (rows in hierarchy order). Right: each
    area's mean selected layer with its SD across vertices, coloured like the layer map, with a
    relative-depth axis on top (0 first layer, 1 last) that reads alike for networks of any depth.

    Args:
        summary: from :func:`stages.report.summaries.summarise_rois`.
        layer_names: the fit's layers (x axis of the profile).
        score: printed in the title when given.
        title: figure title prefix.
        axes: two axes to draw into; a new figure when omitted.
    """
    if summary.empty:
        raise InvalidInputError("the fit has no vertex inside a named ROI; nothing to chart")
    n_layers = len(layer_names)
    if axes is None:
        figure = Figure(figsize=(10, 0.35 * len(summary) + 1.6), layout="constrained")
        axes = figure.subplots(1, 2, width_ratios=(3, 2))
    profile_ax, layer_ax = axes
    profiles = summary[[f"profile_{i:02d}" for i in range(n_layers)]].to_numpy()
    image = profile_ax.imshow(profiles, aspect="auto", cmap=LAYER_WEIGHT_CMAP, vmin=0,
                              vmax=max(float(profiles.max()), 1e-6), interpolation="nearest")
    labels = [_area_label(row) for row in summary.itertuples(index=False)]
    profile_ax.set_yticks(range(len(summary)), labels, fontsize=7)
    step = max(1, n_layers // 12)
    profile_ax.set_xticks(range(0, n_layers, step), [str(i) for i in range(0, n_layers, step)], fontsize=7)
    profile_ax.set_xlabel("layer", fontsize=8)
    profile_ax.set_title("mean layer-weight profile", fontsize=9)
    profile_ax.figure.colorbar(image, ax=profile_ax, shrink=0.8, label="mean weight")
    positions = np.arange(len(summary))
    colours = layer_hue(np.rint(summary["mean_layer"].to_numpy()).astype(int), n_layers)
    layer_ax.errorbar(summary["mean_layer"], positions, xerr=summary["sd_layer"], fmt="none", ecolor="0.5",
                      elinewidth=0.8)
    label = "mean selected layer (± SD over vertices)"
    if {"mean_layer_low", "mean_layer_high"} <= set(summary.columns):
        mean = summary["mean_layer"].to_numpy()
        spread = np.stack([mean - summary["mean_layer_low"].to_numpy(), summary["mean_layer_high"].to_numpy() - mean])
        layer_ax.errorbar(mean, positions, xerr=np.clip(spread, 0, None), fmt="none", ecolor="black", elinewidth=2.2,
                          capsize=2)
        label = "mean selected layer (grey: ± SD over vertices; black: 95 % bootstrap interval)"
    layer_ax.scatter(summary["mean_layer"], positions, c=colours, s=30, edgecolors="black", linewidths=0.5, zorder=3)
    layer_ax.set_yticks(positions, labels, fontsize=7)
    layer_ax.set_ylim(len(summary) - 0.5, -0.5)
    layer_ax.set_xlim(-0.5, n_layers - 0.5)
    span = max(n_layers - 1, 1)
    depth_axis = layer_ax.secondary_xaxis("top", functions=(lambda x: x / span, lambda d: d * span))
    depth_axis.set_xlabel("relative depth (layer / (layers - 1))", fontsize=7)
    depth_axis.tick_params(labelsize=6)
    layer_ax.set_xlabel(label, fontsize=8)
    layer_ax.grid(axis="x", alpha=0.3)
    heading = title
    if score is not None:
        interval = (f" [{score.low:.2f}, {score.high:.2f}]" if np.isfinite(score.low) and np.isfinite(score.high)
                    else "")
        heading += (f"  hierarchy score ρ = {score.spearman:.2f}{interval} (ceiling {score.ceiling:.2f}, "
                    f"{score.n_areas} areas), mean entropy {score.mean_entropy:.2f}")
    profile_ax.figure.suptitle(heading.strip(), fontsize=9)
    return profile_ax.figure


def _area_label(row: object) -> str:
    rank = getattr(row, "hierarchy_rank")
    suffix = "" if np.isnan(rank) else f" [{int(rank)}]"
    return f"{getattr(row, 'area')}{suffix} (n={getattr(row, 'n_vertices')})"
