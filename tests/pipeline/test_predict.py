"""In-silico prediction: a finished fit predicts new images like the planted mechanism, CLI = API, refusals.

One module-scoped run root (``insilico_world``): a smooth random store of model ``fake`` (200 images),
synthetic subject 1 planted on it, a short FactorTopy fit, and a store of 40 new images from the same
feature distribution that the fit never saw. Ridge, banded ridge and joint fits: ``test_predict_methods.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from builders import SYNTHETIC_FEATURES, random_store
from cache.errors import IncompleteStoreError, InvalidInputError, StoreMismatchError
from cache.folder import chunk_file
from cache.store import FeatureStore
from pipeline import cli, runroot
from pipeline.api import load_fit, open_store
from pipeline.insilico import image_files
from pipeline.preferred import CLUSTER_TABLE, channel_clusters
from pipeline.synthetic.noise_free import noise_free_responses, planted_mechanism
from pipeline.synthetic.planting import plant_maps
from pipeline.synthetic.geometry import build_region
from pipeline.synthetic.responses import generate_signal
from stages.fit.config import FitConfig
from stages.fit.metrics import pearson_r, r2_score
from stages.fit.train import fit_factortopy
from insilico_world import SYNTH, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run root, training store, new-image store, subject, and the fit folder."""
    world = build_world(tmp_path_factory.mktemp("insilico") / "runs")
    result = fit_factortopy(world["store"], world["subject"], FitConfig(epochs=3, warm_start="none", device="cpu"),
                            checkpoint_dir=None, progress=False)
    return {**world, "fit": result.save(runroot.fit_dir(world["root"], "fake", world["subject"].name))}


def test_the_rebuilt_read_out_is_the_fits_own(world: dict) -> None:
    """Predicting the fit's test images reproduces the test R^2 its table records (the fit's own pass)."""
    fit = load_fit(world["fit"])
    subject = world["subject"]
    test = subject.splits["test"]
    predicted = fit.predict(store=world["store"].path)
    row = {image_id: index for index, image_id in enumerate(predicted.image_id.values.tolist())}
    values = predicted.values[[row[image_id] for image_id in subject.stimulus_ids[test]]]
    mean, std = fit.maps["train_mean"].to_numpy(), fit.maps["train_std"].to_numpy()
    r2 = r2_score((values - mean) / std, (subject.responses[test] - mean) / std)
    assert np.allclose(r2, fit.maps["r2_test"].to_numpy(), atol=1e-4)
    # response units: the predictions live on the responses' scale, not the z-scored one
    assert abs(float(values.mean()) - float(subject.responses[test].mean())) < 0.5 * float(subject.responses.std())
    assert predicted.attrs["units"].startswith("the fit's response units")


def test_the_planted_mechanism_is_reproduced_from_the_subject_record(world: dict) -> None:
    """On the subject's own store, the rebuilt mechanism gives generate_signal's signal from the recorded seeds."""
    store = world["store"]
    mechanism = planted_mechanism(runroot.synthetic_root(world["root"]) / "subj01", store)
    geometry_rng, maps_rng, readout_rng, _ = (np.random.default_rng(s) for s in np.random.SeedSequence([0, 1]).spawn(4))
    maps = plant_maps(build_region(SYNTH, geometry_rng), n_layers=store.n_layers, cfg=SYNTH, rng=maps_rng)
    signal = generate_signal(store, store.image_ids, maps, n_readouts=SYNTH.n_readouts,
                             nonlinearity=SYNTH.nonlinearity, batch_size=SYNTH.batch_size, rng=readout_rng)
    assert np.allclose(noise_free_responses(mechanism, store, store.image_ids), signal, atol=1e-5)
    with pytest.raises(StoreMismatchError, match="not the one"):
        planted_mechanism(runroot.synthetic_root(world["root"]) / "subj01", world["novel"])


def test_new_images_are_predicted_like_the_planted_noise_free_responses(world: dict) -> None:
    """On 40 images the fit never saw, predictions correlate with the planted noise-free responses about as well
    as on the subject's held-out test images (median over vertices), and far above chance."""
    fit = load_fit(world["fit"])
    mechanism = planted_mechanism(runroot.synthetic_root(world["root"]) / "subj01", world["store"])
    new = fit.predict(store=world["novel"].path)
    r_new = np.median(pearson_r(new.values, noise_free_responses(mechanism, world["novel"], new.image_id.values)))
    test_ids = world["subject"].stimulus_ids[world["subject"].splits["test"]]
    held_out = fit.predict(store=world["store"].path).set_index(image="image_id").sel(image=test_ids)
    r_held_out = np.median(pearson_r(held_out.values, noise_free_responses(mechanism, world["store"], test_ids)))
    r_test = float(np.median(fit.maps["r_test"]))
    print(f"median r with the noise-free responses: new images {r_new:.3f}, test images {r_held_out:.3f}; "
          f"median test-set r with the noisy responses {r_test:.3f}")
    assert r_new > 0.3 and r_new > 0.75 * r_held_out


def test_the_command_writes_the_api_numbers_as_a_zarr_array(world: dict, tmp_path: Path) -> None:
    out = tmp_path / "novel.zarr"
    code = cli.main(["--run-root", str(world["root"]), "predict", "--fit", str(world["fit"]),
                     "--store", str(world["novel"].path), "--out", str(out), "--block-mb", "0.01"])
    assert code == 0
    written = open_store(out)
    expected = load_fit(world["fit"]).predict(store=world["novel"].path)
    assert written.dims == ("image", "vertex") and written.dtype == np.float32
    assert np.array_equal(written.values, expected.values)
    assert written.image_id.values.tolist() == world["novel"].image_ids.tolist()
    for name in ("fsaverage_index", "hemisphere", "roi"):
        assert np.array_equal(written[name].values, expected[name].values)
    assert set(written.roi.values.tolist()) >= {"V1v", ""}
    assert written.attrs["fit"]["subject"] == "subj01" and written.attrs["store"]["path"] == str(world["novel"].path)
    assert [p.name for p in tmp_path.iterdir()] == ["novel.zarr"]   # no .partial left
    # the default place, under the run root
    assert cli.main(["--run-root", str(world["root"]), "predict", "--model", "fake", "--store",
                     str(world["novel"].path)]) == 0
    assert open_store(runroot.predictions_path(world["root"], world["fit"], "novel")).shape == (40, 120)


def test_a_store_of_another_model_or_a_damaged_one_is_refused(world: dict, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    other = random_store(tmp_path / "other.zarr", n_images=8, model_id="timm:test_vit", **SYNTHETIC_FEATURES)
    fit = load_fit(world["fit"])
    with pytest.raises(StoreMismatchError, match="model 'timm:test_vit'.*fitted on 'fake'"):
        fit.predict(store=other.path)
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(world["novel"].path, damaged)
    opened = FeatureStore.open(damaged)
    chunk = chunk_file(damaged, opened.feature_arrays()["local_8x8_layer_02"], 0)
    chunk.write_bytes(chunk.read_bytes()[:10])
    code = cli.main(["--run-root", str(world["root"]), "predict", "--fit", str(world["fit"]), "--store",
                     str(damaged), "--out", str(tmp_path / "out.zarr")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and "is damaged: chunk 0" in error
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "out.zarr.partial").exists()
    with pytest.raises(IncompleteStoreError):
        fit.image_store(store=damaged)


def test_bad_inputs_end_in_one_line(world: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fit = load_fit(world["fit"])
    with pytest.raises(InvalidInputError, match="not both"):
        fit.predict(tmp_path, store=world["novel"].path)
    with pytest.raises(InvalidInputError, match="uint8"):
        image_files(np.zeros((2, 20, 20, 3), dtype=np.float32), run_root=tmp_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        image_files([tmp_path / "absent.png"], run_root=tmp_path)
    with pytest.raises(InvalidInputError, match="records no model id"):   # the fake store has no recipe to extract by
        fit.predict(np.zeros((2, 20, 20, 3), dtype=np.uint8))
    for flags in (["--block-mb", "0"], ["--block-mb", "nan"]):
        code = cli.main(["--run-root", str(world["root"]), "predict", "--fit", str(world["fit"]), "--store",
                         str(world["novel"].path), *flags])
        assert code == 2 and "--block-mb must be a positive" in capsys.readouterr().err
    code = cli.main(["--run-root", str(world["root"]), "predict", "--fit", str(tmp_path), "--store",
                     str(world["novel"].path)])
    assert code == 2 and "is not a finished fit" in capsys.readouterr().err
    assert not list(runroot.resolve_run_root(str(world["root"])).glob("predictions/**/*.partial"))


def test_the_store_view_is_xarray(world: dict) -> None:
    dataset = open_store(world["novel"].path)
    assert dataset["global_layer_00"].dims == ("image", "channel_00")
    assert dataset.image_id.values.tolist() == world["novel"].image_ids.tolist()
    assert dataset.attrs["provenance"]["model"]["model_id"] == "fake"
    assert isinstance(FeatureStore.open(world["novel"].path), FeatureStore)


def test_the_roi_and_cluster_rankings_follow_the_planted_mechanism(world: dict, tmp_path: Path) -> None:
    """bddn preferred ranks the new images per ROI and per channel cluster; each ranking agrees with the ranking
    by the planted mechanism's noise-free means over the same vertices (Spearman), the cluster means are the
    predictions averaged over the report's clusters, and the page shows the ends of each ranking."""
    out = tmp_path / "preferred"
    assert cli.main(["--run-root", str(world["root"]), "preferred", "--fit", str(world["fit"]), "--store",
                     str(world["novel"].path), "--top", "3", "--out", str(out)]) == 0
    ranking = pd.read_parquet(out / "preferred.parquet")
    clusters = pd.read_parquet(out / CLUSTER_TABLE)
    mechanism = planted_mechanism(runroot.synthetic_root(world["root"]) / "subj01", world["store"])
    truth = noise_free_responses(mechanism, world["novel"], ranking.index.tolist())
    fit = load_fit(world["fit"])
    rois = fit.maps["roi"].to_numpy()
    rho = {roi: spearmanr(ranking[roi], truth[:, rois == roi].mean(axis=1))[0]
           for roi in sorted(set(rois) - {""})}
    print("Spearman per ROI of the predicted and the planted ranking: "
          + ", ".join(f"{roi} {value:.2f}" for roi, value in rho.items()))
    assert set(rho) == set(ranking.columns) - {f"rank_{roi}" for roi in rho}
    assert np.median(list(rho.values())) > 0.3 and min(rho.values()) > 0
    labels = channel_clusters(world["fit"], fit.result.n_vertices)
    names = sorted(set(labels))
    predicted = fit.predict(store=world["novel"].path).set_index(image="image_id").sel(image=clusters.index).values
    assert np.allclose(clusters[names].to_numpy(), np.stack([predicted[:, labels == name].mean(axis=1)
                                                             for name in names], axis=1), atol=1e-5)
    cluster_rho = [spearmanr(clusters[name], truth[:, labels == name].mean(axis=1))[0] for name in names]
    print(f"Spearman per channel cluster ({len(names)}): median {np.median(cluster_rho):.2f}, "
          f"min {min(cluster_rho):.2f}")
    assert len(names) == 20 and np.median(cluster_rho) > 0.3
    page = (out / "index.html").read_text()
    best = ranking["V1v"].idxmax()
    assert page.count("<section>") == len(rho) + len(names) and best in page and (ranking["rank_V1v"][best] == 1)
    assert "Channel clusters" in page and clusters[names[0]].idxmax() in page
