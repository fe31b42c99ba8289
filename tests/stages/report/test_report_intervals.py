"""Bootstrap intervals of ROI means and of the hierarchy score; summaries restricted to significant vertices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import spearmanr

from stages.report.intervals import area_replicates, intervals_overlap, percentile_interval, spearman_replicates
from stages.report.summaries import score_hierarchy, summarise_rois
from report_helpers import planted_fit, with_statistics


def test_vertex_bootstrap_intervals_cover_the_mean_about_95_percent_of_the_time():
    """400 areas of 60 vertices drawn from N(2, 1): the 95 % percentile interval of each area's mean holds 2."""
    rng = np.random.default_rng(0)
    values = rng.normal(2.0, 1.0, 400 * 60)
    groups = [np.arange(start, start + 60) for start in range(0, len(values), 60)]
    replicates = area_replicates({"x": values}, groups, tuple(map(str, range(400))), n_resamples=1000, seed=1)
    low, high = percentile_interval(replicates.means["x"], level=0.95)
    coverage = np.mean((low <= 2.0) & (2.0 <= high))
    assert 0.91 <= coverage <= 0.98


def test_spearman_replicates_equal_scipy_row_by_row():
    rng = np.random.default_rng(1)
    ranks = np.array([1, 2, 3, 4, 5, 5, 5])
    replicates = rng.normal(size=(20, 7)).round(1)
    expected = [spearmanr(ranks, row).statistic for row in replicates]
    np.testing.assert_allclose(spearman_replicates(ranks, replicates), expected, rtol=1e-10)
    assert np.isnan(spearman_replicates(ranks, np.ones((1, 7))))[0]


def test_summaries_carry_intervals_around_their_means():
    fit = with_statistics(planted_fit())
    summary = summarise_rois(fit, n_resamples=300)
    for name in ("mean_layer", "mean_scale", "mean_layer_confidence", "r2_test"):
        assert (summary[f"{name}_low"] <= summary[name] + 1e-9).all()
        assert (summary[name] <= summary[f"{name}_high"] + 1e-9).all()
        assert (summary[f"{name}_high"] > summary[f"{name}_low"]).all()
    assert "mean_layer_set_size" in summary and (summary["n_significant"] <= summary["n_vertices"]).all()
    assert (summary["mean_layer_set_size_sampling"] == 1).all()   # the resampling-only size beside it
    score = score_hierarchy(fit, summary, n_resamples=300)
    assert score.low - 1e-9 <= score.spearman <= score.high + 1e-9
    base = planted_fit(seed=3)   # selections barely related to the hierarchy: an uncertain score
    layer = np.random.default_rng(4).uniform(0, 8, base.n_vertices) + 0.02 * np.asarray(base.vertices["layer_mean"])
    wide = score_hierarchy(dataclasses.replace(base, vertices={**base.vertices, "layer_mean": layer}), n_resamples=300)
    assert wide.low - 1e-9 <= wide.spearman <= wide.high + 1e-9 and wide.high - wide.low > 0.3


def test_alpha_keeps_only_significant_vertices():
    fit = with_statistics(planted_fit())
    everything = summarise_rois(fit, n_resamples=50)
    significant = summarise_rois(fit, alpha=0.05, n_resamples=50)
    kept = np.asarray(fit.vertices["q_value"]) <= 0.05
    assert significant["n_vertices"].sum() == kept[np.asarray(fit.vertices["roi"]) != ""].sum()
    assert significant["n_vertices"].sum() < everything["n_vertices"].sum()
    np.testing.assert_array_equal(significant["n_vertices"], significant["n_significant"])
    truth = planted_fit()   # no q-values: alpha leaves it whole
    assert summarise_rois(truth, alpha=0.05, n_resamples=10)["n_vertices"].sum() == \
        summarise_rois(truth, n_resamples=10)["n_vertices"].sum()


def test_a_hierarchy_without_spread_within_areas_has_a_point_interval_and_overlap_rules():
    fit = planted_fit(noise=0.0)
    score = score_hierarchy(fit, n_resamples=100)
    assert score.low == pytest.approx(score.spearman) and score.high == pytest.approx(score.spearman)
    assert intervals_overlap((0.1, 0.5), (0.4, 0.9)) and not intervals_overlap((0.1, 0.3), (0.4, 0.9))
    assert not intervals_overlap((np.nan, 0.3), (0.1, 0.9))


def test_compare_says_whether_hierarchy_scores_differ_beyond_their_intervals():
    from stages.report.compare import compare_hierarchy_scores

    ordered, shuffled = with_statistics(planted_fit(seed=1)), planted_fit(seed=1, shuffle=True)
    table = compare_hierarchy_scores([ordered, shuffled, ordered])
    assert list(table["differ"]) == [True, False, True]
    first = table.iloc[0]
    assert first["low_first"] <= first["spearman_first"] + 1e-9 and first["difference"] < 0
    significant = compare_hierarchy_scores([ordered, ordered], alpha=0.05)
    assert not significant["differ"].iloc[0]


def test_maps_with_alpha_blank_the_vertices_that_are_not_significant():
    from stages.report.maps import fit_maps

    fit = with_statistics(planted_fit())
    keep = np.asarray(fit.vertices["q_value"]) <= 0.05
    maps = {m.name: m for m in fit_maps(fit, alpha=0.05)}
    assert {"layer_confidence", "layer_set_size", "significance"} <= set(maps)
    assert np.isnan(maps["layer"].colours[~keep]).all() and np.isfinite(maps["layer"].colours[keep]).all()
    assert np.isnan(maps["r2_test"].values[~keep]).all() and np.isnan(maps["layer_confidence"].values[~keep]).all()
    assert np.isfinite(maps["significance"].values).all()
    assert f"{keep.sum()} of {fit.n_vertices} vertices" in maps["scale"].title
    whole = {m.name: m for m in fit_maps(fit)}
    assert np.isfinite(whole["r2_test"].values).all()
