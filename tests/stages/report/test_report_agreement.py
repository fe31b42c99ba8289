"""Network-to-network agreement per ROI against scipy's Spearman on a tiny fixture: three networks of 12, 17
and 19 layers fitted to two subjects, rows shuffled and some vertices missing, one network with tied depths."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from stages.fit.result import FitResult, layer_summary, layer_weight_column
from stages.report.agreement import ALL_VERTICES, depth_agreement
from stages.report.summaries import canonical_area
from report_helpers import ranked_fit


def _subset(fit: FitResult, rows: np.ndarray) -> FitResult:
    return dataclasses.replace(fit, vertices={name: np.asarray(values)[rows] for name, values in fit.vertices.items()})


def _one_hot(fit: FitResult) -> FitResult:
    """``fit`` with each vertex's weight all on its argmax layer (integer depths: many ties)."""
    weights = np.eye(len(fit.layer_names))[fit.vertices["layer_argmax"]]
    vertices = {**fit.vertices, **{layer_weight_column(i): weights[:, i].astype(np.float32)
                                   for i in range(weights.shape[1])}, **layer_summary(weights)}
    return dataclasses.replace(fit, vertices=vertices)


def _fixture() -> list[FitResult]:
    fits = []
    for subject_index, subject in enumerate(("subj01", "subj02")):
        rng = np.random.default_rng(subject_index)
        for seed, (n_layers, model) in enumerate(((12, "vit"), (17, "effnet"), (19, "mobilenet"))):
            fit = ranked_fit(n_layers, seed=10 * subject_index + seed, model=model, subject=subject)
            fit = _one_hot(fit) if model == "effnet" else fit
            rows = rng.permutation(fit.n_vertices)
            fits.append(_subset(fit, rows[:-5] if model == "mobilenet" else rows))
    return fits


def _oracle(fits: list[FitResult]) -> pd.DataFrame:
    """The table computed the plain way: merge two fits of a subject on (hemisphere, fsaverage_index), group by
    area, scipy's spearmanr, mean over subjects."""
    frames = {(fit.subject, fit.model): pd.DataFrame({
        "hemisphere": fit.vertices["hemisphere"], "fsaverage_index": fit.vertices["fsaverage_index"],
        "roi": fit.vertices["roi"], "depth": fit.vertices["layer_mean"] / (len(fit.layer_names) - 1)})
        for fit in fits}
    rows = []
    for subject in ("subj01", "subj02"):
        for first, second in itertools.combinations(("vit", "effnet", "mobilenet"), 2):
            both = frames[(subject, first)].merge(frames[(subject, second)], on=["hemisphere", "fsaverage_index"])
            both["area"] = [canonical_area(roi) for roi in both["roi_x"]]
            groups = [(area, part) for area, part in both.groupby("area") if area] + [(ALL_VERTICES, both)]
            rows += [{"area": area, "first": f"{first} (factortopy)", "second": f"{second} (factortopy)",
                      "spearman": spearmanr(part["depth_x"], part["depth_y"]).statistic, "n_vertices": len(part)}
                     for area, part in groups]
    return pd.DataFrame(rows).groupby(["area", "first", "second"], as_index=False).agg(
        spearman=("spearman", "mean"), n_vertices=("n_vertices", "sum"))


def test_agreement_matches_scipy_spearman_averaged_over_subjects() -> None:
    fits = _fixture()
    table = depth_agreement(fits)
    expected = _oracle(fits)
    assert len(table) == len(expected) == 6 * 3          # V1..V4, FFA and all vertices, for 3 pairs
    merged = table.merge(expected, on=["area", "first", "second"], suffixes=("", "_oracle"))
    assert len(merged) == len(table)
    np.testing.assert_allclose(merged["spearman"], merged["spearman_oracle"], atol=1e-12)
    assert (merged["n_vertices"] == merged["n_vertices_oracle"]).all() and (table["n_subjects"] == 2).all()
    assert list(dict.fromkeys(table["area"])) == ["V1", "V2", "V3", "V4", "FFA", ALL_VERTICES]
    assert list(table["first"][:3]) == ["vit (factortopy)", "vit (factortopy)", "effnet (factortopy)"]


def test_agreement_is_empty_without_two_networks_of_one_subject() -> None:
    fits = [ranked_fit(12, model="vit", subject="subj01"), ranked_fit(19, model="mobilenet", subject="subj02")]
    table = depth_agreement(fits)
    assert table.empty and "spearman" in table.columns


def test_constant_depth_gives_nan_not_a_number_out_of_thin_air() -> None:
    flat = ranked_fit(12, model="flat")
    weights = np.zeros((flat.n_vertices, 12))
    weights[:, 4] = 1.0
    flat = dataclasses.replace(flat, vertices={**flat.vertices, **layer_summary(weights)})
    table = depth_agreement([ranked_fit(19, model="mobilenet"), flat])
    assert table["spearman"].isna().all() and (table["n_subjects"] == 0).all()
    assert table.loc[table["area"] == ALL_VERTICES, "n_vertices"].item() == 0
