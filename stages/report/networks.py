"""Networks side by side in relative depth: one map, one ROI chart and one table for several networks.

Each network (a model fitted by one method, :func:`stages.report.agreement.network_label`) is shown
by its subject average when it was fitted to two or more subjects, else by its one fit. Its
relative-depth map (:mod:`stages.report.depth`) is drawn on the fixed 0..1 scale every network
shares, titled with its number of layers and its hierarchy score with the score's 95 % bootstrap
interval (the score is depth-invariant, so the numbers compare across networks as they are). The
ROI chart puts every network's mean relative depth per area on one 0..1 axis.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from cache.errors import InvalidInputError
from stages.fit.result import FitResult
from stages.mesh import CorticalMesh
from stages.report.agreement import network_label
from stages.report.colours import LAYER_CMAP
from stages.report.compare import average_fits
from stages.report.depth import DEPTH_COLUMN, DEPTH_RANGE
from stages.report.figures import render_map
from stages.report.maps import depth_map
from stages.report.summaries import score_hierarchy, summarise_rois


def network_fits(fits: Sequence[FitResult]) -> dict[str, FitResult]:
    """Network label -> the fit that shows it: the subject average of its fits of two or more subjects, else
    its first fit; in the order the networks first appear."""
    groups: dict[str, list[FitResult]] = {}
    for fit in fits:
        groups.setdefault(network_label(fit), []).append(fit)
    return {label: average_fits(group) if len({fit.subject for fit in group}) >= 2 else group[0]
            for label, group in groups.items()}


def network_summaries(networks: Mapping[str, FitResult], *, alpha: float | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The networks' hierarchy scores and their areas' mean relative depth.

    Returns:
        ``scores``: one row per network: ``network``, ``layers``, ``subjects`` (fits averaged), the hierarchy
        score ``hierarchy_spearman`` with ``hierarchy_low``/``hierarchy_high`` (95 % bootstrap interval),
        ``hierarchy_ceiling``, ``ranked_areas``. ``areas``: one row per network and area (areas in hierarchy
        order): ``network``, ``area``, ``hierarchy_rank``, ``n_vertices``, ``mean_layer``,
        ``mean_relative_depth`` with ``mean_relative_depth_low``/``_high``.
    """
    if not networks:
        raise InvalidInputError("a comparison of networks needs at least one fit")
    score_rows, area_tables = [], []
    for label, fit in networks.items():
        summary = summarise_rois(fit, alpha=alpha)
        score = score_hierarchy(fit, summary, alpha=alpha)
        score_rows.append({"network": label, "layers": len(fit.layer_names),
                           "subjects": len(fit.metrics.get("subjects", [fit.subject])),
                           "hierarchy_spearman": score.spearman, "hierarchy_low": score.low,
                           "hierarchy_high": score.high, "hierarchy_ceiling": score.ceiling,
                           "ranked_areas": score.n_areas})
        if not summary.empty:
            kept = [c for c in ("area", "hierarchy_rank", "n_vertices", "mean_layer", "mean_relative_depth",
                                "mean_relative_depth_low", "mean_relative_depth_high") if c in summary]
            area_tables.append(summary[kept].assign(network=label))
    areas = pd.concat(area_tables, ignore_index=True) if area_tables else pd.DataFrame(columns=["network", "area"])
    return pd.DataFrame(score_rows), areas[["network", *[c for c in areas.columns if c != "network"]]]


def score_text(row: Mapping[str, float]) -> str:
    """``ρ = 0.81 [0.74, 0.86]`` from a row of the scores table (``ρ undefined`` when NaN)."""
    if not np.isfinite(row["hierarchy_spearman"]):
        return "ρ undefined"
    interval = (f" [{row['hierarchy_low']:.2f}, {row['hierarchy_high']:.2f}]"
                if np.isfinite(row["hierarchy_low"]) and np.isfinite(row["hierarchy_high"]) else "")
    return f"ρ = {row['hierarchy_spearman']:.2f}{interval}"


def render_depth_maps(networks: Mapping[str, FitResult], flat: CorticalMesh, scores: pd.DataFrame, *,
                      panel_width: float = 3.6, resolution: int = 400) -> Figure:
    """One panel per network: its relative-depth map, zoomed onto its vertices, titled with its layers and its
    hierarchy score and interval (``scores`` from :func:`network_summaries`); one shared 0..1 colour bar."""
    if not networks:
        raise InvalidInputError("a comparison of networks needs at least one fit")
    by_label = {row["network"]: row for row in scores.to_dict("records")}
    figure = Figure(figsize=(panel_width * len(networks) + 0.8, 0.8 * panel_width + 0.6), layout="constrained")
    axes = figure.subplots(1, len(networks), squeeze=False)[0]
    for ax, (label, fit) in zip(axes, networks.items()):
        row = by_label[label]
        render_map(fit, depth_map(fit), flat, rois=False, resolution=resolution, crop=True, ax=ax,
                   title=f"{label}\n{row['layers']} layers, hierarchy {score_text(row)}")
        ax.title.set_fontsize(7)
        for inset in list(ax.child_axes):   # its own colour bar: one is shared below
            inset.remove()
    figure.colorbar(ScalarMappable(norm=Normalize(*DEPTH_RANGE), cmap=LAYER_CMAP), ax=list(axes), shrink=0.7,
                    label="relative depth (0 first layer, 1 last)")
    figure.suptitle(f"{DEPTH_COLUMN.replace('_', ' ')} of the expected layer, networks side by side", fontsize=9)
    return figure


def render_depth_profiles(areas: pd.DataFrame, scores: pd.DataFrame) -> Figure:
    """Every network's mean relative depth per area on one 0..1 axis (bars: 95 % bootstrap interval), areas in
    hierarchy order top to bottom; the legend gives each network's layers and hierarchy score with interval."""
    if areas.empty:
        raise InvalidInputError("no network has a vertex inside a named ROI; nothing to chart")
    order = list(dict.fromkeys(areas.sort_values(["hierarchy_rank", "area"], na_position="last")["area"]))
    labels = list(scores["network"])
    figure = Figure(figsize=(7, 0.32 * len(order) * max(1, len(labels) / 2) + 1.4), layout="constrained")
    ax = figure.subplots()
    offsets = np.linspace(-0.3, 0.3, len(labels)) if len(labels) > 1 else np.zeros(1)
    colours = [f"C{i % 10}" for i in range(len(labels))]
    for label, offset, colour, row in zip(labels, offsets, colours, scores.to_dict("records")):
        mine = areas[areas["network"] == label].set_index("area").reindex(order)
        positions = np.arange(len(order)) + offset
        mean = mine["mean_relative_depth"].to_numpy(dtype=float)
        if {"mean_relative_depth_low", "mean_relative_depth_high"} <= set(mine.columns):
            spread = np.stack([mean - mine["mean_relative_depth_low"].to_numpy(dtype=float),
                               mine["mean_relative_depth_high"].to_numpy(dtype=float) - mean])
            ax.errorbar(mean, positions, xerr=np.clip(np.nan_to_num(spread), 0, None), fmt="none", ecolor=colour,
                        elinewidth=1.5, capsize=2)
        ax.scatter(mean, positions, color=colour, s=24, edgecolors="black", linewidths=0.4, zorder=3,
                   label=f"{label}: {row['layers']} layers, hierarchy {score_text(row)}")
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("mean relative depth of the expected layer (0 first layer, 1 last; bars: 95 % bootstrap interval)",
                  fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    figure.legend(fontsize=7, loc="outside lower center")
    ax.set_title("areas in relative depth, networks side by side", fontsize=9)
    return figure

