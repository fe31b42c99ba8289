"""`bddn features` and `bddn fit` hold their output's lock (cache.lock): a second run refuses in one line, and the
lock goes when the run ends, an error included."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.lock import hold_lock, lock_path
from pipeline import runroot
from pipeline.commands import features as features_command
from pipeline.commands import fit as fit_command
from pipeline.imagesets.demo import write_demo_images
from cli_runs import FEATURES_MODEL, fake_fit_root, run_features, run_fit, stage_one_only


class _Stop(RuntimeError):
    pass


@pytest.fixture()
def demo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A run root with 4 demo images; returns it and the path of their store."""
    stage_one_only(monkeypatch)
    write_demo_images(runroot.imageset_dir(tmp_path, "demo"), count=4, size=32)
    return tmp_path, runroot.feature_store_path(tmp_path, "demo", FEATURES_MODEL)


def test_features_refuses_a_store_another_run_holds(demo_root: tuple[Path, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root, store = demo_root
    with hold_lock(store) as path:
        capsys.readouterr()
        assert run_features(root) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("bddn features: error: ") and str(path) in err
    assert not store.exists()


def test_features_releases_its_store_lock_after_an_error(demo_root: tuple[Path, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root, store = demo_root
    held = []

    def failing_update(path: Path, *args: object, **kwargs: object) -> None:
        held.append(lock_path(path).is_file())
        raise _Stop("extraction failed")

    monkeypatch.setattr(features_command, "update_feature_store", failing_update)
    with pytest.raises(_Stop):
        run_features(root)
    assert held == [True] and not lock_path(store).exists()


def test_fit_refuses_a_fit_another_run_holds_and_releases_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  make_store, make_subject,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    fake_fit_root(root, monkeypatch, make_store, make_subject)
    out = runroot.fit_dir(root, "fake", "subj01")
    with hold_lock(out) as path:
        capsys.readouterr()
        assert run_fit(root) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("bddn fit: error: ") and str(path) in err
    assert not out.exists()

    held = []

    def failing_fit(*args: object, **kwargs: object) -> None:
        held.append(path.is_file())
        raise _Stop("training failed")

    monkeypatch.setattr(fit_command, "fit_factortopy", failing_fit)
    with pytest.raises(_Stop):
        run_fit(root)
    assert held == [True] and not path.exists()
