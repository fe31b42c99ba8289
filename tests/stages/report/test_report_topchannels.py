"""Top channels per ROI: PCA directions, bottlenecked tokens, percentile-clipped RGB, the figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from cache.errors import InvalidInputError
from report_helpers import planted_fit
from stages.report.summaries import canonical_area
from stages.report.topchannels import (
    RoiChannels, bottleneck_tokens, render_top_channels, roi_channels, top_channel_rgb,
)


def test_roi_directions_match_sklearn_pca() -> None:
    fit = planted_fit()
    readout = np.random.default_rng(0).normal(size=(fit.n_vertices, 16)) * np.linspace(3, 0.5, 16)
    found = roi_channels(fit, readout)
    assert [c.roi for c in found] == ["V1", "V2", "V3", "V4", "FFA", "PPA"]
    areas = np.array([canonical_area(r) for r in fit.vertices["roi"]])
    for channels in found:
        oracle = PCA(n_components=3).fit(readout[areas == channels.roi]).components_
        np.testing.assert_allclose(np.abs(np.sum(channels.components * oracle, axis=1)), 1.0, atol=1e-6)
        np.testing.assert_allclose(channels.layer_weights, fit.layer_weights[areas == channels.roi].mean(axis=0),
                                   rtol=1e-5)


def test_bottleneck_tokens_resize_to_the_finest_grid() -> None:
    rng = np.random.default_rng(1)
    local = [rng.normal(size=(4, 8, 8)), rng.normal(size=(6, 4, 4))]
    weights = [rng.normal(size=(5, 4)), rng.normal(size=(5, 6))]
    tokens = bottleneck_tokens(local, weights)
    assert tokens.shape == (2, 5, 8, 8)
    np.testing.assert_allclose(tokens[0], np.einsum("dc,chw->dhw", weights[0], local[0]), rtol=1e-5, atol=1e-5)
    conv = torch.nn.functional.conv2d(torch.tensor(local[1])[None].float(), torch.tensor(weights[1])[..., None, None].float())
    expected = torch.nn.functional.interpolate(conv, size=(8, 8), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(tokens[1], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(InvalidInputError, match="does not fit"):
        bottleneck_tokens(local, weights[::-1])


def test_rgb_projects_and_clips_to_percentiles() -> None:
    rng = np.random.default_rng(2)
    tokens = rng.normal(size=(2, 3, 10, 10))
    channels = RoiChannels("V1", np.eye(3), np.array([1.0, 0.0]))
    rgb = top_channel_rgb(tokens, channels)
    assert rgb.shape == (10, 10, 3) and rgb.min() == 0.0 and rgb.max() == 1.0
    red = tokens[0, 0]
    low, high = np.percentile(red, [5, 95])
    np.testing.assert_allclose(rgb[..., 0], (np.clip(red, low, high) - low) / (high - low))
    assert (rgb[..., 0] == 0).mean() == pytest.approx(0.05, abs=0.02)


def test_figure_has_an_image_panel_and_one_per_roi() -> None:
    image = np.zeros((32, 48, 3), dtype=np.uint8)
    maps = {roi: np.random.default_rng(0).uniform(size=(8, 8, 3)) for roi in ("V1", "V2", "FFA")}
    figure = render_top_channels(image, maps, title="x")
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["image", "V1", "V2", "FFA"]
