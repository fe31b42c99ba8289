"""Networks side by side in relative depth: one fit or subject average per network, its hierarchy score with
interval in the table and the titles, one shared 0..1 colour bar, every area on one relative-depth axis."""

from __future__ import annotations

import numpy as np
import pytest

from report_helpers import mesh, ranked_fit
from stages.report.networks import (
    network_fits, network_summaries, render_depth_maps, render_depth_profiles, score_text,
)

NETWORKS = ((12, "vit"), (17, "effnet"), (19, "mobilenet"))


def _fits() -> list:
    return [ranked_fit(n_layers, seed=seed, model=model, subject=subject)
            for seed, (subject, (n_layers, model)) in enumerate(
                (subject, network) for network in NETWORKS for subject in ("subj01", "subj02"))][:-1]


def test_each_network_is_its_subject_average_or_its_one_fit() -> None:
    networks = network_fits(_fits())
    assert list(networks) == ["vit (factortopy)", "effnet (factortopy)", "mobilenet (factortopy)"]
    assert [fit.method for fit in networks.values()] == ["average", "average", "factortopy"]
    scores, areas = network_summaries(networks)
    assert list(scores["layers"]) == [12, 17, 19] and list(scores["subjects"]) == [2, 2, 1]
    assert (scores["hierarchy_low"] <= scores["hierarchy_spearman"] + 1e-9).all()
    assert (scores["hierarchy_spearman"] <= scores["hierarchy_high"] + 1e-9).all()
    assert set(areas["network"]) == set(networks) and areas["mean_relative_depth"].between(0, 1).all()
    first = areas[areas["network"] == "vit (factortopy)"]
    np.testing.assert_allclose(first["mean_relative_depth"], first["mean_layer"] / 11)


def test_side_by_side_maps_share_one_unit_colour_bar_and_name_each_score() -> None:
    networks = network_fits([fit for fit in _fits() if fit.model != "effnet"])
    scores, areas = network_summaries(networks)
    figure = render_depth_maps(networks, mesh("flat"), scores, resolution=60)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    for row, title in zip(scores.to_dict("records"), titles):
        assert title.startswith(row["network"]) and f"{row['layers']} layers" in title
        assert f"ρ = {row['hierarchy_spearman']:.2f} [{row['hierarchy_low']:.2f}, {row['hierarchy_high']:.2f}]" in title
    colour_bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(colour_bars) == 1 and colour_bars[0].get_ylim() == pytest.approx((0.0, 1.0))
    profiles = render_depth_profiles(areas, scores)
    legend = [text.get_text() for text in profiles.legends[0].get_texts()]
    assert legend[0] == f"vit (factortopy): 12 layers, hierarchy {score_text(scores.iloc[0])}"
    assert profiles.axes[0].get_xlim() == pytest.approx((-0.02, 1.02))


def test_an_undefined_score_says_so() -> None:
    assert score_text({"hierarchy_spearman": float("nan"), "hierarchy_low": 0.1, "hierarchy_high": 0.2}) \
        == "ρ undefined"
