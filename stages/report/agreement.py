"""Network-to-network agreement per ROI: how alike two networks' relative-depth maps of one subject are.

For each subject fitted with two networks, the vertices both fits share (fsaverage vertex pairs,
:func:`stages.report.compare.align_vertices`) are grouped by area (the first fit's ROI labels,
:func:`stages.report.summaries.canonical_area`), and within each area, and over all shared
vertices, the two relative-depth maps (:mod:`stages.report.depth`) are rank-correlated (Spearman,
ties averaged). Rank correlation is blind to how many layers each network has and to any monotone
re-spacing of them: it asks only whether the vertices that one network places deeper the other
places deeper too. Where several subjects were fitted with both networks, the per-subject values
are averaged.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from stages.fit.result import FitResult
from stages.report.compare import align_vertices
from stages.report.depth import fit_relative_depth
from stages.report.summaries import canonical_area, hierarchy_rank

#: Area label of the row over every shared vertex.
ALL_VERTICES = "all vertices"
#: Fewest shared vertices of an area for a correlation (fewer: NaN).
MIN_VERTICES = 3
_UNNAMED = {"", "nan", "none"}


def network_label(fit: FitResult) -> str:
    """A network as the agreement table names it: ``model (method)``."""
    return f"{fit.model} ({fit.method})"


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equal-length 1-D arrays (ties averaged); NaN when either is constant
    or shorter than :data:`MIN_VERTICES`."""
    if len(a) < MIN_VERTICES:
        return float("nan")
    ranks_a, ranks_b = rankdata(a), rankdata(b)
    if np.ptp(ranks_a) == 0 or np.ptp(ranks_b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def depth_agreement(fits: Sequence[FitResult]) -> pd.DataFrame:
    """Rank correlation of relative depth per area for every pair of networks fitted to the same subject.

    Args:
        fits: fits of one or more subjects by one or more networks (:func:`network_label`); a network with two
            fits of one subject keeps the first.

    Returns:
        One row per area and pair of networks (in the order the networks first appear), areas in hierarchy
        order, unranked areas next, then :data:`ALL_VERTICES`. Columns: ``area``, ``hierarchy_rank``, ``first``,
        ``second`` (network labels), ``spearman`` (mean over the subjects where it is defined, NaN when it is
        nowhere), ``n_subjects`` (subjects it is defined for) and ``n_vertices`` (shared vertices of the area,
        summed over those subjects). Empty when no subject has two networks.
    """
    by_subject: dict[str, dict[str, FitResult]] = {}
    for fit in fits:
        by_subject.setdefault(fit.subject, {}).setdefault(network_label(fit), fit)
    order = list(dict.fromkeys(network_label(fit) for fit in fits))
    rows = []
    for networks in by_subject.values():
        present = [label for label in order if label in networks]
        for first, second in itertools.combinations(present, 2):
            rows += _subject_rows(networks[first], networks[second], first, second)
    columns = ["area", "hierarchy_rank", "first", "second", "spearman", "n_subjects", "n_vertices"]
    if not rows:
        return pd.DataFrame(columns=columns)
    per_subject = pd.DataFrame(rows)
    defined = per_subject[np.isfinite(per_subject["spearman"])]
    table = (per_subject[["area", "first", "second"]].drop_duplicates()
             .merge(defined.groupby(["area", "first", "second"], as_index=False)
                    .agg(spearman=("spearman", "mean"), n_subjects=("spearman", "size"),
                         n_vertices=("n_vertices", "sum")), how="left", on=["area", "first", "second"]))
    table["n_subjects"] = table["n_subjects"].fillna(0).astype(int)
    table["n_vertices"] = table["n_vertices"].fillna(0).astype(int)
    table["hierarchy_rank"] = [hierarchy_rank(area) for area in table["area"]]
    table["_last"] = np.where(table["area"] == ALL_VERTICES, 2, table["hierarchy_rank"].isna().astype(int))
    table["_pair"] = [order.index(first) * len(order) + order.index(second)
                      for first, second in zip(table["first"], table["second"])]
    table = table.sort_values(["_last", "hierarchy_rank", "area", "_pair"]).reset_index(drop=True)
    return table[columns]


def _subject_rows(first: FitResult, second: FitResult, first_label: str, second_label: str) -> list[dict]:
    """Per-area (and all-vertex) rank correlations of two fits of one subject."""
    rows = align_vertices(second, first)
    shared = np.flatnonzero(rows >= 0)
    depth_first = fit_relative_depth(first)[shared]
    depth_second = fit_relative_depth(second)[rows[shared]]
    labels = np.array([canonical_area(roi) for roi in np.asarray(first.vertices["roi"]).astype(str)[shared]])
    groups = {area: labels == area for area in sorted(set(labels.tolist()) - _UNNAMED)}
    groups[ALL_VERTICES] = np.ones(len(shared), dtype=bool)
    return [{"area": area, "first": first_label, "second": second_label,
             "spearman": rank_correlation(depth_first[inside], depth_second[inside]),
             "n_vertices": int(inside.sum())} for area, inside in groups.items()]
