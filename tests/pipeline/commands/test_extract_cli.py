"""`bddn features`: help text, store location and provenance, resume/mismatch/overwrite, bad input before any store."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cache.store import FeatureStore
from pipeline import cli, runroot
from pipeline.imagesets.demo import write_demo_images
from cli_runs import FEATURES_MODEL, run_features, stage_one_only


@pytest.fixture(autouse=True)
def only_stage_one_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    stage_one_only(monkeypatch)


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["features", "--help"])
    text = capsys.readouterr().out
    parser = cli.build_parser()
    features = parser._subparsers._group_actions[0].choices["features"]
    for action in features._actions:
        for option in action.option_strings:
            assert option in text
        assert action.help, f"{action.option_strings} has no help"
    for option in ("--model", "--images", "--imageset", "--grid", "--batch-size", "--device", "--dtype", "--workers",
                   "--scheduler", "--overwrite", "--random-init", "--checkpoint", "--reference-preprocessing"):
        assert re.search(rf"{option}\b", text), option


@pytest.mark.slow
def test_demo_set_store_resume_mismatch_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--run-root", str(tmp_path), "demo-images", "--count", "6", "--size", "40"]) == 0
    assert run_features(tmp_path, "--grid", "8,2", "--seed", "4") == 0
    path = runroot.feature_store_path(tmp_path, "demo", FEATURES_MODEL)
    store = FeatureStore.open(path)
    assert store.is_complete() and store.grids == (8, 2) and store.n_chunks == 2
    assert list(store.image_ids) == [f"demo-{i:05d}" for i in range(6)]
    record = store.provenance
    assert record["model"]["model_id"] == FEATURES_MODEL and record["model"]["weights"] == "random-init"
    assert record["seed"] == 4 and record["decoding"]["alpha"].startswith("composited")
    assert record["run"]["imageset"] == "demo" and record["run"]["config"]["grids"] == [8, 2]
    assert record["tokens"]["antialias"] is True and record["compute"]["autocast"] == "off"
    first = store.read(store.image_ids.tolist()).local[0]

    capsys.readouterr()
    assert run_features(tmp_path, "--grid", "8,2", "--seed", "4", "--batch-size", "3") == 0
    assert "up to date" in capsys.readouterr().err

    assert run_features(tmp_path, "--grid", "8,2", "--seed", "5") == 2
    assert "seed: stored 4, requested 5" in capsys.readouterr().err
    assert run_features(tmp_path, "--grid", "8,2", "--seed", "5", "--overwrite") == 0
    again = FeatureStore.open(path)
    assert again.provenance["seed"] == 5
    assert not np.array_equal(again.read(again.image_ids.tolist()).local[0], first)


def test_images_folder_names_the_store(tmp_path: Path) -> None:
    folder = write_demo_images(tmp_path / "my_stimuli", count=5, size=40).folder
    assert run_features(tmp_path / "runs", "--images", str(folder)) == 0
    assert FeatureStore.open(runroot.feature_store_path(tmp_path / "runs", "my_stimuli", FEATURES_MODEL)).is_complete()


def test_bad_images_fail_before_any_store_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "stimuli"
    folder.mkdir()
    Image.new("RGB", (40, 40)).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"")
    Image.new("RGB", (8, 40)).save(folder / "c.png")
    assert run_features(tmp_path / "runs", "--images", str(folder)) == 2
    error = capsys.readouterr().err
    assert "b.png: empty file" in error and "c.png: image is 8x40" in error and "a.png" not in error
    assert error.count("\n") == 1  # one line
    assert not (tmp_path / "runs" / "features").exists()


def test_missing_sources_are_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_features(tmp_path) == 2
    assert "bddn demo-images" in capsys.readouterr().err
    assert run_features(tmp_path, "--images", str(tmp_path / "nowhere")) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_features(tmp_path, "--grid", "8,x")
