"""Every fit method predicts new images through one predictor: ridge, banded ridge, each subject of a joint fit.

The world (``insilico_world``): a random store of model ``fake`` (200 images), synthetic subjects 1 and 2
planted on it, and 40 new images the fits never saw. Oracles: each fit's own test-set scores, an sklearn
``Ridge`` refit of single vertices, and the planted noise-free responses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from cache.errors import InvalidInputError, MissingInputError
from cache.store import FeatureStore
from pipeline import cli, runroot
from pipeline.api import load_fit, open_store
from pipeline.surfaces import shared_sphere_coordinates
from pipeline.synthetic.noise_free import noise_free_responses, planted_mechanism
from stages.fit import coefficients as coefficients_module
from stages.fit.coefficients import COEFFICIENTS_FILE, read_coefficients
from stages.fit.config import FitConfig
from stages.fit.metrics import pearson_r, r2_score
from stages.fit.multisubject import fit_factortopy_multi
from stages.fit.result import FIT_JSON
from stages.fit.ridge import RidgeConfig, fit_ridge
from insilico_world import build_world

RIDGE = {"ridge": RidgeConfig(layer_resamples=0),
         "banded-ridge": RidgeConfig(method="banded-ridge", banded_samples=3, layer_resamples=0)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The world plus fit folders: ``ridge`` and ``banded-ridge`` of subj01, ``joint`` (subj02 of a joint fit)."""
    world = build_world(tmp_path_factory.mktemp("methods") / "runs", subjects=(1, 2))
    root, subject = world["root"], world["subject"]
    results = {method: fit_ridge(world["store"], subject, cfg) for method, cfg in RIDGE.items()}
    folders = {method: result.save(runroot.fit_dir(root, "fake", subject.name, method))
               for method, result in results.items()}
    names = [s.name for s in world["subjects"]]
    joint = fit_factortopy_multi(world["store"], shared_sphere_coordinates(world["subjects"]),
                                 FitConfig(epochs=1, batch_size=16, warm_start="none", device="cpu"), checkpoint_dir=None,
                                 progress=False)
    for result in joint:
        result.save(runroot.joint_fit_dir(root, "fake", names, result.subject))
    folders["joint"] = runroot.joint_fit_dir(root, "fake", names, names[1])
    return {**world, "fits": folders, "ridge_result": results["ridge"]}


@pytest.mark.parametrize("kind", ["ridge", "banded-ridge", "joint"])
def test_a_fit_predicts_its_own_test_images_as_it_scored_them(world: dict, kind: str) -> None:
    """Predicting the fit's test images through the stored read-out gives the test R^2 and r its table records."""
    fit = load_fit(world["fits"][kind])
    subject = next(s for s in world["subjects"] if s.name == fit.result.subject)
    test = subject.splits["test"]
    predicted = fit.predict(store=world["store"].path).set_index(image="image_id").sel(
        image=subject.stimulus_ids[test]).values
    assert np.allclose(r2_score(predicted, subject.responses[test]), fit.maps["r2_test"], atol=1e-4)
    assert np.allclose(pearson_r(predicted, subject.responses[test]), fit.maps["r_test"], atol=1e-4)


def test_ridge_predictions_of_new_images_equal_an_sklearn_refit(world: dict) -> None:
    """For a vertex that chose the global token and one that chose the pooled local tokens, sklearn's Ridge on
    the chosen block (z-scored by the training images, / sqrt(width)) with the chosen alpha predicts the new
    images as the fit does; the coefficient file keeps only the chosen block of each vertex."""
    fit = load_fit(world["fits"]["ridge"])
    subject, store, novel = world["subject"], world["store"], world["novel"]
    new = fit.predict(store=novel.path).values
    scale = fit.maps["scale"].to_numpy()
    train = subject.splits["train"]
    checked = [int(np.flatnonzero(scale == value)[0]) for value in (1.0, 0.0) if (scale == value).any()]
    assert checked
    for vertex in checked:
        layer = int(fit.maps["layer_argmax"][vertex])

        def block(which: FeatureStore, ids: np.ndarray) -> np.ndarray:
            batch = which.read(list(ids))
            if scale[vertex] == 1.0:
                return batch.global_[layer].astype(np.float64)
            pooled = torch.nn.functional.adaptive_avg_pool2d(torch.as_tensor(batch.local[layer].astype(np.float32)), 2)
            return pooled.flatten(1).double().numpy()

        seen = block(store, subject.stimulus_ids)
        mean, sd = seen[train].mean(0), seen[train].std(0, ddof=1)
        norm = lambda x: (x - mean) / sd / np.sqrt(seen.shape[1])   # noqa: E731
        refit = Ridge(alpha=float(fit.maps["ridge_alpha"][vertex])).fit(norm(seen[train]),
                                                                        subject.responses[train, vertex])
        expected = refit.predict(norm(block(novel, novel.image_ids)))
        assert np.allclose(new[:, vertex], expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    coefficients = read_coefficients(fit.path, n_vertices=fit.result.n_vertices, layer_names=fit.result.layer_names)
    widths = {"global": 0, "local": 0}
    for group in coefficients.groups:
        assert len(group.blocks) == 1
        (name, layer), = group.blocks
        assert (fit.maps["layer_argmax"].to_numpy()[group.vertices] == layer).all()
        assert (scale[group.vertices] == (name == "global")).all()
        widths[name] += group.weights.shape[0] * group.weights.shape[1]
    assert coefficients.nbytes == 4 * sum(widths.values())



@pytest.mark.parametrize("kind", ["ridge", "banded-ridge", "joint"])
def test_new_images_follow_the_planted_noise_free_responses(world: dict, kind: str) -> None:
    """On 40 new images, the median over vertices of the correlation with the planted noise-free responses."""
    fit = load_fit(world["fits"][kind])
    mechanism = planted_mechanism(runroot.synthetic_root(world["root"]) / fit.result.subject, world["store"])
    new = fit.predict(store=world["novel"].path)
    r_new = float(np.median(pearson_r(new.values, noise_free_responses(mechanism, world["novel"],
                                                                       new.image_id.values))))
    print(f"{kind} ({fit.result.subject}): median r with the noise-free responses of new images {r_new:.3f}, "
          f"median test-set r {float(np.median(fit.maps['r_test'])):.3f}")
    assert r_new > 0.3


def test_the_command_finds_a_ridge_fit_by_method_and_writes_the_api_numbers(world: dict) -> None:
    assert cli.main(["--run-root", str(world["root"]), "predict", "--model", "fake", "--subject", "subj01",
                     "--method", "ridge", "--store", str(world["novel"].path)]) == 0
    written = open_store(runroot.predictions_path(world["root"], world["fits"]["ridge"], "novel"))
    assert written.attrs["fit"]["method"] == "ridge" and written.attrs["units"].startswith("the fit's response")
    assert "intercept" in written.attrs["units"] and "train_std" not in written.attrs["units"]
    assert np.array_equal(written.values, load_fit(world["fits"]["ridge"]).predict(store=world["novel"].path).values)


def test_a_missing_or_damaged_coefficient_file_is_refused_in_one_line(world: dict, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    source = world["fits"]["ridge"]
    broken = tmp_path / "fits" / "fake" / "subj01-ridge"
    broken.mkdir(parents=True)
    for entry in source.iterdir():
        (broken / entry.name).write_bytes(entry.read_bytes())
    coefficients = broken / COEFFICIENTS_FILE
    intact = coefficients.read_bytes()
    command = ["--run-root", str(world["root"]), "predict", "--fit", str(broken), "--store", str(world["novel"].path),
               "--out", str(tmp_path / "out.zarr")]
    for damage, error in ((lambda: coefficients.unlink(), "does not exist"),
                          (lambda: coefficients.write_bytes(intact[:len(intact) // 2]), "not a readable coefficient")):
        damage()
        assert cli.main(command) == 2
        message = capsys.readouterr().err.strip()
        assert len(message.splitlines()) == 1 and str(coefficients) in message and error in message
        assert not (tmp_path / "out.zarr").exists()
    coefficients.write_bytes(intact)
    fit = load_fit(broken)
    with pytest.raises(InvalidInputError, match="not from one fit"):
        read_coefficients(broken, n_vertices=fit.result.n_vertices + 1, layer_names=fit.result.layer_names)
    with pytest.raises(MissingInputError, match=COEFFICIENTS_FILE):
        read_coefficients(tmp_path, n_vertices=1, layer_names=())


def test_preferred_ranks_by_the_subject_average_of_several_fits(world: dict, tmp_path: Path) -> None:
    """bddn preferred with two fits (ridge of subj01, joint FactorTopy of subj02): each ROI's value is the mean over
    the subjects of each subject's ROI mean, and its ranking agrees with the planted mechanisms' average."""
    folders = [world["fits"]["ridge"], world["fits"]["joint"]]
    out = tmp_path / "average"
    assert cli.main(["--run-root", str(world["root"]), "preferred", "--fit", *map(str, folders), "--store",
                     str(world["novel"].path), "--top", "2", "--out", str(out)]) == 0
    ranking = pd.read_parquet(out / "preferred.parquet")
    ids = ranking.index.tolist()
    own, planted = [], []
    for folder in folders:
        fit = load_fit(folder)
        rois = fit.maps["roi"].to_numpy()
        values = fit.predict(store=world["novel"].path).set_index(image="image_id").sel(image=ids).values
        truth = noise_free_responses(planted_mechanism(runroot.synthetic_root(world["root"]) / fit.result.subject,
                                                       world["store"]), world["novel"], ids)
        names = sorted(set(rois) - {""})
        own.append(pd.DataFrame({roi: values[:, rois == roi].mean(axis=1) for roi in names}, index=ids))
        planted.append(pd.DataFrame({roi: truth[:, rois == roi].mean(axis=1) for roi in names}, index=ids))
    shared = sorted(set(own[0].columns) & set(own[1].columns))
    assert [c for c in ranking.columns if not c.startswith("rank_")] == shared
    assert np.allclose(ranking[shared].to_numpy(), (own[0][shared] + own[1][shared]).to_numpy() / 2, atol=1e-5)
    rho = {roi: spearmanr(ranking[roi], planted[0][roi] + planted[1][roi])[0] for roi in shared}
    print("subject average, Spearman per ROI with the planted average: "
          + ", ".join(f"{roi} {value:.2f}" for roi, value in rho.items()))
    assert np.median(list(rho.values())) > 0.3
    page = (out / "index.html").read_text()
    assert "average over these 2 subjects" in page and not (out / "clusters.parquet").exists()


def test_a_ridge_fit_folder_gets_fit_json_only_after_its_coefficients(world: dict, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """fit.json marks a finished fit: when writing the coefficients fails, it is not written."""
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(coefficients_module, "write_coefficients", fail)
    with pytest.raises(OSError, match="disk full"):
        world["ridge_result"].save(tmp_path / "fit")
    assert not (tmp_path / "fit" / FIT_JSON).exists()
