"""No fitter reads a hole: a re-fit over a feature store with a missing chunk file, or a chunk holding NaN, stops
in one line naming the store, array and chunk and the repair, and the finished fit stays in place."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cache.folder import chunk_file
from cache.schema import local_array_name
from cache.store import FeatureStore
from pipeline import cli, runroot
from pipeline.commands import fit as fit_command
from pipeline.report.inputs import discover_inputs
from stages.fit.result import FIT_JSON, FitResult
from cli_runs import FAST_FIT, fake_fit_root, run_fit

METHODS = ("factortopy", "ridge", "banded-ridge")
#: The damaged chunk (of 4: the fake store has 64 images, 16 per chunk) and layer.
CHUNK, LAYER = 1, 1


def _store(root: Path) -> FeatureStore:
    return FeatureStore.open(runroot.feature_store_path(root, "demo", "fake"))


def _array_name(store: FeatureStore) -> str:
    return local_array_name(LAYER, store.grids[0], store.n_layers)


def _delete_chunk_file(store: FeatureStore) -> None:
    chunk_file(store.path, store.feature_arrays()[_array_name(store)], CHUNK).unlink()


def _fill_chunk_with_nan(store: FeatureStore) -> None:
    """Overwrite the chunk with NaN behind the store's back and record the new file's size, as if written so."""
    array = store.feature_arrays()[_array_name(store)]
    rows = store.chunk_rows(CHUNK)
    array[rows] = np.full((rows.stop - rows.start, *array.shape[1:]), np.nan, dtype=array.dtype)
    store._record_chunk_bytes(CHUNK)


def _refused(capsys: pytest.CaptureFixture, store: FeatureStore, status: int, *, problem: str, repair: str) -> None:
    """The re-fit exited 2 with one line naming the store, array, chunk, the ``problem`` and the ``repair``."""
    message = capsys.readouterr().err.strip()
    assert status == 2, message
    assert "\n" not in message and str(store.path) in message and _array_name(store) in message
    assert f"chunk {CHUNK}" in message and problem in message and repair in message


def _kept(root: Path, folders: list[Path], texts: list[str]) -> None:
    """The earlier fits are unchanged, readable, and the only ones a report sees."""
    assert [(folder / FIT_JSON).read_text() for folder in folders] == texts
    for folder in folders:
        FitResult.load(folder)
    assert [item.source for item in discover_inputs(root)] == folders


@pytest.fixture()
def root(tmp_path, monkeypatch, make_store, make_subject) -> Path:
    root = tmp_path / "runs"
    fake_fit_root(root, monkeypatch, make_store, make_subject)
    return root


@pytest.mark.parametrize("method", METHODS)
def test_a_refit_over_a_missing_chunk_file_is_refused_and_the_fit_kept(root, capsys, method):
    assert run_fit(root, "--method", method) == 0
    folder = runroot.fit_dir(root, "fake", "subj01", method)
    text = (folder / FIT_JSON).read_text()
    store = _store(root)
    _delete_chunk_file(store)
    capsys.readouterr()
    _refused(capsys, store, run_fit(root, "--method", method), problem="is missing", repair="`bddn features`")
    _kept(root, [folder], [text])


@pytest.mark.parametrize("method", METHODS)
def test_a_refit_over_a_chunk_of_nan_is_refused_and_the_fit_kept(root, capsys, method):
    """The chunk file is there with its recorded size, so only the values tell: the readers' shared guard."""
    assert run_fit(root, "--method", method) == 0
    folder = runroot.fit_dir(root, "fake", "subj01", method)
    text = (folder / FIT_JSON).read_text()
    store = _store(root)
    _fill_chunk_with_nan(store)
    capsys.readouterr()
    _refused(capsys, store, run_fit(root, "--method", method), problem="NaN",
             repair="`bddn features` with the same options and --verify")
    _kept(root, [folder], [text])


def test_a_joint_refit_over_a_missing_chunk_file_is_refused_and_the_fits_kept(tmp_path, monkeypatch, make_store,
                                                                             make_subject, capsys):
    root = tmp_path / "runs"
    store = make_store(runroot.feature_store_path(root, "demo", "fake"))
    subjects = {key: replace(make_subject(store, n_vertices=4 + key, seed=key)[0], name=f"subj{key:02d}")
                for key in (1, 2)}
    monkeypatch.setattr(fit_command, "load_subject", lambda data, key, **kwargs: subjects[key])
    argv = ["--run-root", str(root), "fit", "--model", "fake", "--subjects", "1", "2", *FAST_FIT]
    assert cli.main(argv) == 0
    folders = [runroot.joint_fit_dir(root, "fake", ["subj01", "subj02"], name) for name in ("subj01", "subj02")]
    texts = [(folder / FIT_JSON).read_text() for folder in folders]
    _delete_chunk_file(store)
    capsys.readouterr()
    _refused(capsys, store, cli.main(argv), problem="is missing", repair="`bddn features`")
    _kept(root, folders, texts)
