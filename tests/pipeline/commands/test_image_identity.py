"""One image id means one image at fit time and in a sweep: a subject whose image file is not the photo the store
extracted under that id is refused in one line, never fitted on the other photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import cli, runroot
from pipeline.commands import sweep as sweep_command
from cli_runs import FEATURES_MODEL, run_features
from subject_folders import write_algonauts


def _two_subjects(root: Path) -> Path:
    """Algonauts subjects 1 and 2 with the same stimuli, except that subject 2's first training image (same name,
    same id) is another photo; returns that file."""
    for number in (1, 2):
        write_algonauts(root, number, n_train=24)
    other = sorted((root / "subj02" / "training_split" / "training_images").iterdir())[0]
    Image.fromarray(np.full((20, 20, 3), 7, dtype=np.uint8)).save(other)
    return other


def _fit(runs: Path, root: Path, subject: str) -> int:
    return cli.main(["--run-root", str(runs), "fit", "--model", FEATURES_MODEL, "--imageset", "shared", "--data",
                     "algonauts", "--root", str(root), "--subject", subject, "--method", "ridge", "--no-progress"])


def test_a_fit_on_another_photo_under_the_same_id_is_refused(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    root, runs = tmp_path / "data", tmp_path / "runs"
    other = _two_subjects(root)
    subject1 = root / "subj01"
    assert run_features(runs, "--images", str(subject1 / "training_split" / "training_images"),
                        str(subject1 / "test_split" / "test_images"), "--name", "shared") == 0
    capsys.readouterr()
    assert _fit(runs, root, "2") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"subj02's image {other} (id nsd-" in err and "is not the image feature store" in err
    assert "rerun `bddn features`" in err and "rename one" in err
    assert not runroot.fit_dir(runs, FEATURES_MODEL, "subj02", "ridge").exists()
    assert _fit(runs, root, "1") == 0   # the store's own photos fit


def test_a_sweep_over_subjects_with_two_photos_under_one_id_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root, runs = tmp_path / "data", tmp_path / "runs"
    other = _two_subjects(root)
    first = root / "subj01" / other.relative_to(root / "subj02")

    def no_cluster(**options: object) -> None:
        raise AssertionError("the sweep started tasks over an image set with two photos under one id")

    monkeypatch.setattr(sweep_command, "open_client", no_cluster)
    assert cli.main(["--run-root", str(runs), "sweep", "--models", FEATURES_MODEL, "--subjects", "1", "2",
                     "--methods", "ridge", "--data", "algonauts", "--root", str(root), "--name", "t"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"names two different images, {first} and {other}" in err
