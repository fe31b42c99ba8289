"""ROI summaries, hierarchy score, subject averages and differences."""

from __future__ import annotations

import numpy as np
import pytest

from cache.errors import InvalidInputError
from report_helpers import planted_fit
from stages.report.compare import average_fits, difference_maps
from stages.report.markdown import to_markdown
from stages.report.summaries import canonical_area, hierarchy_rank, score_hierarchy, summarise_rois


@pytest.mark.parametrize(("roi", "area"), [("V1v", "V1"), ("V2d", "V2"), ("hV4", "V4"), ("FFA-1", "FFA"),
                                           ("VWFA-2", "VWFA"), ("floc-faces:OFA", "OFA"), ("mTL-bodies", "mTL-bodies"),
                                           ("", "")])
def test_canonical_area(roi: str, area: str) -> None:
    assert canonical_area(roi) == area


def test_hierarchy_ranks_early_areas_in_order_and_ties_higher_areas() -> None:
    assert [hierarchy_rank(a) for a in ("V1", "V2", "V3", "V4", "FFA", "PPA")] == [1, 2, 3, 4, 5, 5]
    assert np.isnan(hierarchy_rank("early"))


def test_summary_matches_a_plain_per_area_average() -> None:
    fit = planted_fit()
    table = summarise_rois(fit)
    assert list(table["area"]) == ["V1", "V2", "V3", "V4", "FFA", "PPA"]
    areas = np.array([canonical_area(r) for r in fit.vertices["roi"]])
    for row in table.itertuples(index=False):
        inside = areas == row.area
        assert row.n_vertices == inside.sum()
        assert row.mean_layer == pytest.approx(float(np.mean(fit.vertices["layer_mean"][inside])), rel=1e-6)
        assert row.r2_test == pytest.approx(float(np.mean(fit.vertices["r2_test"][inside])), rel=1e-5)
        profile = fit.layer_weights[inside].mean(axis=0)
        np.testing.assert_allclose([getattr(row, f"profile_{i:02d}") for i in range(8)], profile, rtol=1e-5)
    markdown = to_markdown(table[["area", "n_vertices", "mean_layer"]])
    assert markdown.splitlines()[0] == "| area | n_vertices | mean_layer |"
    assert len(markdown.splitlines()) == 2 + len(table)


def test_hierarchy_score_is_high_for_a_planted_hierarchy_and_low_when_shuffled() -> None:
    planted = score_hierarchy(planted_fit())
    assert planted.spearman > 0.9 and planted.n_areas == 6
    assert planted.ceiling == pytest.approx(0.9856, abs=1e-3)  # ranks 1,2,3,4,5,5 against 0..5
    assert planted.spearman == pytest.approx(planted.ceiling)  # the planted order is perfect
    shuffled = [score_hierarchy(planted_fit(seed=seed, shuffle=True)).spearman for seed in range(8)]
    assert abs(np.mean(shuffled)) < 0.35
    assert np.mean(shuffled) < planted.spearman - 0.6
    assert 0 < planted.mean_entropy < 1


def test_hierarchy_score_is_nan_with_too_few_ranked_areas() -> None:
    fit = planted_fit()
    fit.vertices["roi"] = np.where(np.isin(fit.vertices["roi"], ["V1v", "V2d"]), fit.vertices["roi"], "streams")
    assert np.isnan(score_hierarchy(fit).spearman)


def test_average_of_identical_fits_is_the_fit_and_difference_is_zero() -> None:
    fit = planted_fit()
    other = planted_fit()
    other.subject = "subj02"
    average = average_fits([fit, other])
    assert average.n_vertices == fit.n_vertices
    order = np.lexsort((fit.vertices["fsaverage_index"], fit.vertices["hemisphere"]))
    np.testing.assert_allclose(average.vertices["layer_mean"], fit.vertices["layer_mean"][order], atol=1e-5)
    _, maps = difference_maps(fit, other)
    for vertex_map in maps:
        np.testing.assert_allclose(vertex_map.values, 0, atol=1e-6)


def test_average_covers_the_union_of_vertices() -> None:
    fit = planted_fit()
    half = planted_fit(seed=1)
    keep = np.arange(half.n_vertices) % 2 == 0
    half.vertices = {name: np.asarray(values)[keep] for name, values in half.vertices.items()}
    average = average_fits([fit, half])
    assert average.n_vertices == fit.n_vertices
    assert set(np.unique(average.vertices["n_subjects"])) == {1, 2}


def test_average_refuses_mixed_models() -> None:
    with pytest.raises(InvalidInputError, match="one model"):
        average_fits([planted_fit(model="a"), planted_fit(model="b")])
