"""A synthetic subject on disk: Algonauts layout round trip through the real reader, truth, reuse, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from builders import SYNTHETIC_FEATURES, image_folder, random_store
from cache.errors import InvalidInputError, MissingInputError
from pipeline import runroot
from pipeline.cli import main
from pipeline.subjects.algonauts import read_algonauts
from pipeline.surfaces import sphere_coordinates
from pipeline.synthetic import generate
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.generate import split_images, synthesize_subject
from pipeline.synthetic.layout import load_planted_truth
from stages.fit.result import REQUIRED_COLUMNS

CFG = SyntheticConfig(vertices_per_hemisphere=120, batch_size=32)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("synth")
    store = random_store(base / "store.zarr", n_images=80, **SYNTHETIC_FEATURES)
    files = image_folder(base / "images", store.image_ids.tolist())
    summary = synthesize_subject(store, files, base / "synthetic", 2, cfg=CFG, seed=5, model="random-test")
    return store, files, base / "synthetic", summary


def test_reader_reads_back_the_same_arrays_masks_and_ids(made) -> None:
    store, _, root, summary = made
    folder = root / "subj02"
    assert summary.folder == folder and not summary.reused
    subject = read_algonauts(root, 2, reader="synthetic")
    truth = load_planted_truth(folder)
    n = truth.n_vertices
    assert subject.n_vertices == n == 240 and subject.n_images == 80
    assert np.array_equal(subject.hemisphere, truth.vertices["hemisphere"])
    assert np.array_equal(subject.fsaverage_index, truth.vertices["fsaverage_index"])
    assert np.allclose(subject.noise_ceiling, truth.vertices["noise_ceiling"])
    assert np.allclose(subject.sphere_coords, sphere_coordinates(subject.hemisphere, subject.fsaverage_index))
    # ids: the store's, the test split being the generator's own
    train_ids, test_ids = split_images(store.image_ids, test_fraction=CFG.test_fraction, seed=CFG.split_seed)
    assert sorted(subject.stimulus_ids.tolist()) == sorted(store.image_ids.tolist())
    assert sorted(subject.stimulus_ids[subject.splits["test"]].tolist()) == sorted(test_ids.tolist())
    assert subject.source["test_split"] == "data's own"
    # arrays: the files hold exactly what the reader returns, in file-name row order
    lh = np.load(folder / "training_split" / "training_fmri" / "lh_training_fmri.npy")
    rh = np.load(folder / "test_split" / "test_fmri" / "rh_test_fmri.npy")
    assert lh.dtype == np.float32 and lh.shape == (train_ids.size, (truth.vertices["hemisphere"] == "lh").sum())
    assert np.array_equal(subject.responses[:train_ids.size, :lh.shape[1]], lh)
    assert np.array_equal(subject.responses[train_ids.size:, lh.shape[1]:], rh)
    assert np.array_equal(subject.stimulus_ids[:train_ids.size], train_ids)
    # masks: reader ROIs equal the planted areas
    for name, area in (("V1v", "V1"), ("hV4", "V4"), ("FFA-1", "FFA"), ("PPA", "PPA"), ("EBA", "EBA")):
        assert np.array_equal(subject.rois[name], truth.vertices["roi_label"] == name)
        assert set(truth.vertices["roi"][subject.rois[name]]) == {area}
    v1 = subject.rois["V1v"] | subject.rois["V1d"]
    assert np.array_equal(v1, truth.vertices["roi"] == "V1")


def test_layout_files_follow_the_algonauts_conventions(made) -> None:
    _, files, root, _ = made
    folder = root / "subj02"
    names = sorted(p.name for p in (folder / "training_split" / "training_images").iterdir())
    assert names[0].startswith("train-0001_demo-") and names[0].endswith(".png")
    first = folder / "training_split" / "training_images" / names[0]
    source = files[first.name.split("_", 1)[1][:-4]]
    assert first.read_bytes() == source.read_bytes()
    mask = np.load(folder / "roi_masks" / "lh.all-vertices_fsaverage_space.npy")
    assert mask.shape == (163842,) and mask.sum() == 120 and np.all(mask[10242:] == 0)
    labels = np.load(folder / "roi_masks" / "lh.prf-visualrois_fsaverage_space.npy")
    challenge = np.load(folder / "roi_masks" / "lh.prf-visualrois_challenge_space.npy")
    assert np.array_equal(labels[mask == 1], challenge)
    mapping = np.load(folder / "roi_masks" / "mapping_floc-faces.npy", allow_pickle=True).item()
    assert type(mapping) is dict and mapping[2] == "FFA-1"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_planted_truth_has_the_fit_columns_and_provenance(made) -> None:
    store, _, root, summary = made
    truth = load_planted_truth(root / "subj02")
    for column in REQUIRED_COLUMNS + ("layer_weight_00", "layer_weight_03", "rf_size", "noise_ceiling"):
        assert column in truth.vertices
    assert truth.method == "truth" and truth.layer_names == store.layer_names
    assert np.allclose(truth.layer_weights.sum(axis=1), 1, atol=1e-5)
    record = truth.provenance
    assert record["seed"] == 5 and record["store"]["identity"] == store.identity()
    assert record["config"]["vertices_per_hemisphere"] == 120 and record["noise_ceiling_unit"].startswith("fraction")
    assert "packages" in record["environment"]
    assert abs(summary.noise_ceiling_achieved - summary.noise_ceiling_target) < 0.1
    assert sum(summary.roi_counts.values()) < 240


def test_same_request_is_reused_and_a_different_one_needs_overwrite(made) -> None:
    store, files, root, _ = made
    stamp = (root / "subj02" / "planted_truth.json").stat().st_mtime_ns
    again = synthesize_subject(store, files, root, 2, cfg=CFG, seed=5, model="random-test")
    assert again.reused and (root / "subj02" / "planted_truth.json").stat().st_mtime_ns == stamp
    with pytest.raises(InvalidInputError, match="seed.*--overwrite"):
        synthesize_subject(store, files, root, 2, cfg=CFG, seed=6, model="random-test")


def test_subjects_differ_and_a_seed_reproduces(made, tmp_path: Path) -> None:
    store, files, root, _ = made
    first = synthesize_subject(store, files, tmp_path, 2, cfg=CFG, seed=5, model="random-test")
    other = synthesize_subject(store, files, tmp_path, 3, cfg=CFG, seed=5, model="random-test")
    reference = np.load(root / "subj02" / "training_split" / "training_fmri" / "lh_training_fmri.npy")
    assert np.array_equal(np.load(first.folder / "training_split" / "training_fmri" / "lh_training_fmri.npy"), reference)
    assert not np.array_equal(load_planted_truth(other.folder).vertices["fsaverage_index"],
                              load_planted_truth(first.folder).vertices["fsaverage_index"])


def test_a_failed_write_leaves_no_subject(made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, files, _, _ = made

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(generate, "write_planted_truth", broken)
    with pytest.raises(OSError, match="disk full"):
        synthesize_subject(store, files, tmp_path, 1, cfg=CFG, seed=0, model="random-test")
    assert list(tmp_path.iterdir()) == []


def test_missing_image_files_are_named(made, tmp_path: Path) -> None:
    store, files, _, _ = made
    partial = dict(list(files.items())[1:])
    with pytest.raises(MissingInputError, match="demo-00000"):
        synthesize_subject(store, partial, tmp_path, 1, cfg=CFG, seed=0, model="random-test")


def test_command_makes_subjects_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_root = tmp_path / "runs"
    images = tmp_path / "pictures"
    store = random_store(runroot.feature_store_path(run_root, "pictures", "random-test"), n_images=40,
                         **SYNTHETIC_FEATURES)
    image_folder(images, store.image_ids.tolist())
    argv = ["--run-root", str(run_root), "synth", "--subjects", "1", "--model", "random-test", "--images",
            str(images), "--vertices", "60", "--noise-ceiling", "0.5", "--no-progress"]
    assert main(argv) == 0
    message = capsys.readouterr().err
    assert "subj01" in message and "V1" in message and "target mean 0.500" in message
    assert read_algonauts(runroot.synthetic_root(run_root), 1).n_vertices == 120
    assert main(argv) == 0 and "up to date" in capsys.readouterr().err
    assert main(argv[:-1] + ["--noise-ceiling", "40"]) == 2
    assert "noise_ceiling" in capsys.readouterr().err
    assert main(["--run-root", str(run_root), "synth", "--model", "other", "--images", str(images)]) == 2
    assert "bddn features --model other" in capsys.readouterr().err


def test_an_unrelated_folder_in_the_way_is_not_replaced(made, tmp_path: Path) -> None:
    store, files, _, _ = made
    (tmp_path / "subj01").mkdir()
    (tmp_path / "subj01" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="--overwrite"):
        synthesize_subject(store, files, tmp_path, 1, cfg=CFG, seed=0, model="random-test")
    assert (tmp_path / "subj01" / "notes.txt").read_text() == "mine"
