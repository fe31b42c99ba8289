"""Relative depth: layer / (layers - 1) for networks of 12, 17 and 19 layers, on one fixed 0..1 colour scale in
every map, export, viewer readout and ROI table; the hierarchy score does not depend on it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from cache.errors import InvalidInputError
from report_helpers import ranked_fit
from stages.report.colours import LAYER_CMAP
from stages.report.depth import DEPTH_RANGE, comparison_maps, fit_relative_depth, mixed_depths, relative_depth
from stages.report.maps import fit_maps, scalar_exports
from stages.report.summaries import score_hierarchy, summarise_rois
from stages.report.viewer_maps import readout_fields, viewer_maps

DEPTHS = (12, 17, 19)


@pytest.mark.parametrize("n_layers", DEPTHS)
def test_relative_depth_runs_from_the_first_layer_to_the_last(n_layers: int) -> None:
    depth = relative_depth(np.arange(n_layers), n_layers)
    np.testing.assert_allclose(depth, [index / (n_layers - 1) for index in range(n_layers)])
    assert depth[0] == 0.0 and depth[-1] == 1.0
    fit = ranked_fit(n_layers)
    np.testing.assert_allclose(fit_relative_depth(fit), fit.vertices["layer_mean"] / (n_layers - 1), rtol=1e-6)


def test_relative_depth_of_one_layer_is_zero_and_of_none_an_error() -> None:
    assert relative_depth(0, 1) == 0.0
    with pytest.raises(InvalidInputError, match="at least one layer"):
        relative_depth(0, 0)


def test_every_network_shares_one_fixed_colour_scale() -> None:
    fits = [ranked_fit(n) for n in DEPTHS]
    assert mixed_depths(fits) and not mixed_depths([fits[0], ranked_fit(12, seed=1)])
    assert comparison_maps(fits) == ("relative_depth", "space", "scale")          # grids compare relative depth
    assert comparison_maps([fits[0], ranked_fit(12, seed=1)]) == ("layer", "space", "scale")
    for fit in fits:
        maps = [m.name for m in fit_maps(fit)]
        depth = next(m for m in fit_maps(fit) if m.name == "relative_depth")
        assert maps.index("relative_depth") == maps.index("layer") + 1
        assert (depth.vmin, depth.vmax) == DEPTH_RANGE == (0.0, 1.0) and depth.cmap == LAYER_CMAP
        np.testing.assert_allclose(depth.values, fit_relative_depth(fit))
        np.testing.assert_allclose(scalar_exports(fit)["relative_depth"], fit_relative_depth(fit), rtol=1e-6)
        viewer = next(entry.map for entry in viewer_maps(fit) if entry.map.name == "relative_depth")
        assert (viewer.vmin, viewer.vmax) == (0.0, 1.0)
        fields = [field.name for field in readout_fields(fit)]
        assert fields[fields.index("layer_mean") + 1] == "relative_depth"


def test_roi_table_has_relative_depth_next_to_the_layer() -> None:
    fit = ranked_fit(17)
    table = summarise_rois(fit, n_resamples=50)
    columns = list(table.columns)
    start = columns.index("mean_layer")
    assert columns[start:start + 6] == ["mean_layer", "mean_layer_low", "mean_layer_high", "mean_relative_depth",
                                        "mean_relative_depth_low", "mean_relative_depth_high"]
    for suffix in ("", "_low", "_high"):
        np.testing.assert_allclose(table[f"mean_relative_depth{suffix}"], table[f"mean_layer{suffix}"] / 16)


def test_hierarchy_score_is_the_same_on_relative_depth() -> None:
    fit = ranked_fit(19, seed=3)
    table = summarise_rois(fit, n_resamples=50)
    score = score_hierarchy(fit, table, n_resamples=50)
    on_depth = spearmanr(table["hierarchy_rank"], table["mean_relative_depth"]).statistic
    assert score.spearman == pytest.approx(on_depth) and np.isfinite(score.low)
