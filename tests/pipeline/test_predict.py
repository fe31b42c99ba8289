"""In-silico prediction: a finished fit predicts new images like the planted mechanism, CLI = API, refusals.

One module-scoped run root: a smooth random store of model ``fake`` (200 images), synthetic subject 1
planted on it, a short FactorTopy fit, and a store of 40 new images from the same feature distribution
that the fit never saw.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from builders import SYNTHETIC_FEATURES, image_folder, random_store
from cache.errors import IncompleteStoreError, InvalidInputError, StoreMismatchError
from cache.folder import chunk_file
from cache.store import FeatureStore
from pipeline import cli, runroot
from pipeline.api import load_fit, open_store
from pipeline.insilico import image_files
from pipeline.subjects.algonauts import read_algonauts
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.generate import synthesize_subject
from pipeline.synthetic.noise_free import noise_free_responses, planted_mechanism
from pipeline.synthetic.planting import plant_maps
from pipeline.synthetic.geometry import build_region
from pipeline.synthetic.responses import generate_signal
from stages.fit.config import FitConfig
from stages.fit.metrics import pearson_r, r2_score
from stages.fit.ridge import RidgeConfig, fit_ridge
from stages.fit.train import fit_factortopy

SYNTH = SyntheticConfig(vertices_per_hemisphere=60, noise_ceiling=0.8, batch_size=64)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run root, training store, new-image store, subject, and the fit folder."""
    root = tmp_path_factory.mktemp("insilico") / "runs"
    store = random_store(runroot.feature_store_path(root, "demo", "fake"), n_images=200, **SYNTHETIC_FEATURES)
    novel = random_store(runroot.feature_store_path(root, "novel", "fake"), n_images=40, seed=7, **SYNTHETIC_FEATURES)
    files = image_folder(root / "imagesets" / "demo", store.image_ids.tolist())
    synthesize_subject(store, files, runroot.synthetic_root(root), 1, cfg=SYNTH, seed=0, model="fake")
    subject = read_algonauts(runroot.synthetic_root(root), 1, reader="synthetic")
    result = fit_factortopy(store, subject, FitConfig(epochs=3, warm_start="none", device="cpu"),
                            checkpoint_dir=None, progress=False)
    folder = runroot.fit_dir(root, "fake", subject.name)
    result.save(folder)
    return {"root": root, "store": store, "novel": novel, "subject": subject, "fit": folder}


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
    ridge = fit_ridge(world["store"], world["subject"], RidgeConfig(layer_resamples=0))
    ridge.save(tmp_path / "ridge")
    with pytest.raises(InvalidInputError, match="ridge fit.*cannot predict"):
        load_fit(tmp_path / "ridge").predict(store=world["novel"].path)
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


def test_the_roi_ranking_follows_the_planted_mechanism(world: dict, tmp_path: Path) -> None:
    """bddn preferred ranks the new images per ROI; its ranking agrees with the ranking by the planted
    mechanism's noise-free ROI means (Spearman per ROI), and the page shows the ends of each ranking."""
    out = tmp_path / "preferred"
    assert cli.main(["--run-root", str(world["root"]), "preferred", "--fit", str(world["fit"]), "--store",
                     str(world["novel"].path), "--top", "3", "--out", str(out)]) == 0
    ranking = pd.read_parquet(out / "preferred.parquet")
    mechanism = planted_mechanism(runroot.synthetic_root(world["root"]) / "subj01", world["store"])
    truth = noise_free_responses(mechanism, world["novel"], ranking.index.tolist())
    rois = load_fit(world["fit"]).maps["roi"].to_numpy()
    rho = {roi: spearmanr(ranking[roi], truth[:, rois == roi].mean(axis=1))[0]
           for roi in sorted(set(rois) - {""})}
    print("Spearman per ROI of the predicted and the planted ranking: "
          + ", ".join(f"{roi} {value:.2f}" for roi, value in rho.items()))
    assert set(rho) == set(ranking.columns) - {f"rank_{roi}" for roi in rho}
    assert np.median(list(rho.values())) > 0.3 and min(rho.values()) > 0
    page = (out / "index.html").read_text()
    best = ranking["V1v"].idxmax()
    assert page.count("<section>") == len(rho) and best in page and (ranking["rank_V1v"][best] == 1)
