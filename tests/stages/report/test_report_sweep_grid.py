"""The sweep's models x subjects grid: one panel per fit plus the average; missing maps are said so."""

from __future__ import annotations

import dataclasses

import numpy as np

from stages.report.sweep_grid import render_model_subject_grid
from tests.report_helpers import mesh, planted_fit


def _without_space(fit):
    nan = np.full(fit.n_vertices, np.nan, dtype=np.float32)
    return dataclasses.replace(fit, vertices={**fit.vertices, "space_x": nan, "space_y": nan})


def test_grid_has_a_panel_per_fit_and_average_and_says_which_maps_are_missing() -> None:
    fits = {("toy", "subj01"): planted_fit(seed=1, subject="subj01"),
            ("toy", "subj02"): planted_fit(seed=2, subject="subj02"),
            ("ridge-like", "subj01"): _without_space(planted_fit(seed=3, subject="subj01"))}
    figure = render_model_subject_grid(fits, mesh("flat"), map_name="space", models=["toy", "ridge-like"],
                                       subjects=["subj01", "subj02"], resolution=120)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles[:3] == ["toy / subj01", "toy / subj02", "toy / average"]
    assert "ridge-like / subj01: no space" in titles       # all-NaN space columns: no map drawn
    assert "ridge-like / subj02: no space" in titles       # no fit at all
