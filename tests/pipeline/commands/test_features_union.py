"""`bddn features` over several folders or an image list: one named set, each stimulus once, extended later
with only its new images (kill-safe, provenance-checked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cache import extend
from cache.errors import InvalidInputError
from cache.store import FeatureStore
from pipeline import runroot
from cli_runs import FEATURES_MODEL, run_features, stage_one_only


@pytest.fixture(autouse=True)
def only_stage_one_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    stage_one_only(monkeypatch)


def _subject_folder(root: Path, name: str, ids: list[int]) -> Path:
    """Images named like Algonauts files (``train-NNNN_nsd-XXXXX.png``); an id's pixels depend only on the id."""
    folder = root / name / "training_images"
    folder.mkdir(parents=True)
    for row, image_id in enumerate(ids, 1):
        pixels = np.random.default_rng(image_id).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"train-{row:04d}_nsd-{image_id:05d}.png")
    return folder


def _store(run_root: Path) -> FeatureStore:
    return FeatureStore.open(runroot.feature_store_path(run_root, "shared", FEATURES_MODEL))


def test_union_of_folders_extracts_each_stimulus_once_and_extends(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    one = _subject_folder(tmp_path, "subj01", [1, 2, 3, 4, 5, 6])
    two = _subject_folder(tmp_path, "subj02", [4, 5, 6, 7, 8])      # 3 shared stimuli under other file names
    assert run_features(runs, "--images", str(one), str(two), "--name", "shared") == 0
    store = _store(runs)
    assert store.image_ids.tolist() == [f"nsd-{i:05d}" for i in range(1, 9)] and store.is_complete()
    before = store.read(store.image_ids.tolist())

    three = _subject_folder(tmp_path, "subj03", [2, 9, 10])
    capsys.readouterr()
    assert run_features(runs, "--images", str(one), str(two), str(three), "--name", "shared") == 0
    err = capsys.readouterr().err
    assert "2 new image(s) extend" in err and "(8 -> 10)" in err and "1/3 chunks to compute" in err
    grown = _store(runs)
    assert grown.image_ids.tolist()[:8] == store.image_ids.tolist() and grown.n_images == 10 and grown.is_complete()
    assert grown.provenance["image_ids_sha256"] == extend.hash_strings(grown.image_ids.tolist())
    after = grown.read(store.image_ids.tolist())
    np.testing.assert_array_equal(after.local[0], before.local[0])    # old rows kept, not recomputed

    fresh = tmp_path / "fresh"
    assert run_features(fresh, "--images", str(one), str(two), str(three), "--name", "shared") == 0
    np.testing.assert_array_equal(_store(fresh).read(grown.image_ids.tolist()).local[0],
                                  grown.read(grown.image_ids.tolist()).local[0])
    capsys.readouterr()
    assert run_features(runs, "--images", str(three), str(two), str(one), "--name", "shared") == 0
    assert "features up to date" in capsys.readouterr().err      # same set in another order: nothing to do


def test_a_store_only_gains_images_from_the_same_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    one = _subject_folder(tmp_path, "subj01", [1, 2, 3])
    two = _subject_folder(tmp_path, "subj02", [3, 4])
    assert run_features(runs, "--images", str(one), str(two), "--name", "shared") == 0
    capsys.readouterr()
    assert run_features(runs, "--images", str(two), "--name", "shared") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "lacks" not in err and "holds 2 images the given folders/lists lack" in err
    three = _subject_folder(tmp_path, "subj03", [5])
    assert run_features(runs, "--images", str(one), str(two), str(three), "--name", "shared", "--seed", "3") == 2
    err = capsys.readouterr().err
    assert "cannot be extended" in err and "seed: stored 0, requested 3" in err
    assert _store(runs).n_images == 4


def test_several_sources_need_a_name_and_lists_resolve_relative_paths(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    one = _subject_folder(tmp_path, "subj01", [1, 2])
    two = _subject_folder(tmp_path, "subj02", [3])
    assert run_features(runs, "--images", str(one), str(two)) == 2
    assert "name it with --name" in capsys.readouterr().err
    listing = tmp_path / "subj02" / "list.txt"
    listing.write_text("# stimuli of a session\n\ntraining_images/train-0001_nsd-00003.png\n")
    assert run_features(runs, "--images", str(one), "--image-list", str(listing), "--name", "shared") == 0
    assert _store(runs).image_ids.tolist() == ["nsd-00001", "nsd-00002", "nsd-00003"]
    listing.write_text("nope.png\n")
    assert run_features(runs, "--image-list", str(listing), "--name", "other") == 2
    assert "line 1" in capsys.readouterr().err


def test_an_interrupted_extension_is_refused_then_finished_by_the_same_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    one = _subject_folder(tmp_path, "subj01", [1, 2, 3, 4, 5])
    two = _subject_folder(tmp_path, "subj02", [6, 7])
    assert run_features(runs, "--images", str(one), "--name", "shared") == 0

    def killed(group, ids, *, old_n, chunk_images):
        group["image_id"].resize((len(ids),))
        raise KeyboardInterrupt   # stands for a kill between the array changes

    monkeypatch.setattr(extend, "_grow_arrays", killed)
    assert run_features(runs, "--images", str(one), str(two), "--name", "shared") != 0
    monkeypatch.undo()
    stage_one_only(monkeypatch)
    with pytest.raises(InvalidInputError, match="was being extended to 7 images when it was interrupted; rerun"):
        _store(runs)
    assert run_features(runs, "--images", str(one), str(two), "--name", "shared") == 0
    store = _store(runs)
    assert store.n_images == 7 and store.is_complete() and store.image_ids.tolist()[-1] == "nsd-00007"


def _bitmaps(folder: Path, seeds: dict[str, int]) -> Path:
    """Uncompressed BMPs (every file the same size, so only their content tells them apart): name -> pixel seed."""
    folder.mkdir(parents=True)
    for name, seed in seeds.items():
        pixels = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return folder


def test_one_id_for_two_different_images_is_refused_in_one_line(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    one = _bitmaps(tmp_path / "D1", {f"demo-{i:05d}.bmp": i for i in range(6)})
    two = _bitmaps(tmp_path / "D2", {f"demo-{i:05d}.bmp": i for i in range(2, 6)} | {"demo-00001.bmp": 99})
    assert run_features(runs, "--images", str(one), str(two), "--name", "shared") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "image id demo-00001 names two different images" in err
    assert str(one / "demo-00001.bmp") in err and str(two / "demo-00001.bmp") in err and "rename one" in err
    assert not runroot.feature_store_path(runs, "shared", FEATURES_MODEL).exists()

    (two / "demo-00001.bmp").rename(two / "demo-00099.bmp")   # the fix the error names; copies stay one image
    assert run_features(runs, "--images", str(one), str(two), "--name", "shared") == 0
    assert _store(runs).image_ids.tolist() == [f"demo-{i:05d}" for i in range(6)] + ["demo-00099"]
