"""A finished fit survives every later failure: a re-fit replaces it only when the new one is complete and sound."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import runroot
from pipeline.commands import fit as fit_command
from cache.errors import InvalidInputError
from pipeline.publish import STAGING_FOLDER, check_finite_scores
from pipeline.report.inputs import discover_inputs
from stages.fit.result import FIT_JSON, VERTEX_TABLE, FitResult
from cli_runs import fake_fit_root, run_fit
from train_stubs import Killed, interrupt_after_first_checkpoint


@pytest.fixture()
def finished(tmp_path, monkeypatch, make_store, make_subject):
    """A run root with one finished fit of subj01; returns (run root, fit folder, its fit.json text, subject)."""
    root = tmp_path / "runs"
    subject, _ = fake_fit_root(root, monkeypatch, make_store, make_subject)
    assert run_fit(root) == 0
    folder = runroot.fit_dir(root, "fake", "subj01")
    return root, folder, (folder / FIT_JSON).read_text(), subject


def _intact(root, folder, text):
    assert (folder / FIT_JSON).read_text() == text
    FitResult.load(folder)                                    # table and header readable
    assert [item.source for item in discover_inputs(root)] == [folder]   # the only fit a report sees


def test_a_refit_with_bad_layers_keeps_the_finished_fit(finished, capsys):
    root, folder, text, _ = finished
    assert run_fit(root, "--layers", "block9") != 0
    assert "block9" in capsys.readouterr().err
    _intact(root, folder, text)


def test_a_refit_killed_during_training_keeps_the_finished_fit_and_stays_resumable(finished, monkeypatch):
    root, folder, text, _ = finished
    interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(Killed):
        run_fit(root, "--epochs", "2")
    _intact(root, folder, text)
    assert (folder / fit_command.CHECKPOINT_FOLDER).is_dir()   # the interrupted re-fit can resume


def test_a_fit_with_non_finite_scores_is_refused_and_the_previous_one_kept(finished, monkeypatch, capsys):
    """NaN features (e.g. a damaged chunk) make the training loss NaN: one line, nothing written or replaced."""
    root, folder, text, subject = finished
    real = FitResult.save
    monkeypatch.setattr(FitResult, "save", lambda self, directory: pytest.fail("a NaN fit was written"))
    from stages.fit import streaming

    original = streaming._FeatureSourceBase._read

    def poisoned(self, positions):
        batch = original(self, positions)
        batch.local[0][:] = np.nan
        return batch

    monkeypatch.setattr(streaming._FeatureSourceBase, "_read", poisoned)
    capsys.readouterr()
    assert run_fit(root) != 0
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "NaN" in message and "previous fit is kept" in message
    monkeypatch.setattr(FitResult, "save", real)
    _intact(root, folder, text)


def test_a_successful_refit_replaces_the_fit_and_leaves_no_staging(finished):
    root, folder, text, _ = finished
    assert run_fit(root, "--seed", "3") == 0
    record = json.loads((folder / FIT_JSON).read_text())
    assert record["config"]["seed"] == 3 and (folder / VERTEX_TABLE).is_file()
    assert not (folder / fit_command.CHECKPOINT_FOLDER).exists()
    assert list((root / STAGING_FOLDER).iterdir()) == []
    assert [item.source for item in discover_inputs(root)] == [folder]


def test_non_finite_scores_are_named_in_one_line():
    check_finite_scores({"mean_r2_val": 0.1, "mean_r2_test": 0.2}, what="fit")
    with pytest.raises(InvalidInputError) as caught:
        check_finite_scores({"mean_r2_val": float("nan"), "mean_r2_test": 0.2}, what="fit of subj01 on fake")
    message = str(caught.value)
    assert message.startswith("fit of subj01 on fake: mean_r2_val = nan") and "\n" not in message


def test_a_truncated_checkpoint_is_one_line_naming_the_file_and_restart_recovers(finished, monkeypatch, capsys):
    root, folder, text, _ = finished
    interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(Killed):
        run_fit(root, "--epochs", "2")
    monkeypatch.undo()
    monkeypatch.setattr(fit_command, "load_subject", lambda *args, **kwargs: finished[3])
    tensors = next((folder / fit_command.CHECKPOINT_FOLDER).glob("*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    capsys.readouterr()
    assert run_fit(root, "--epochs", "2") != 0
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and str(tensors) in message and "--restart" in message
    _intact(root, folder, text)
    assert run_fit(root, "--epochs", "2", "--restart") == 0
    assert json.loads((folder / FIT_JSON).read_text())["config"]["epochs"] == 2


def test_a_report_names_the_fit_folders_it_cannot_show(finished, caplog):
    """An interrupted fit (a folder with only its checkpoint) is not silently left out of a report."""
    import logging

    root, folder, text, _ = finished
    (root / "fits" / "fake" / "subj02" / fit_command.CHECKPOINT_FOLDER).mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        found = discover_inputs(root)
    assert [item.source for item in found] == [folder]
    assert "1 fit folder(s) without fit.json" in caplog.text and "fake/subj02" in caplog.text


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_finished_fit(finished, monkeypatch, capsys):
    import errno

    from stages.fit import train as train_module

    root, folder, text, _ = finished

    def full(directory, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(directory / "state.safetensors"))

    monkeypatch.setattr(train_module, "save_checkpoint", full)
    capsys.readouterr()
    assert run_fit(root) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no space left on the device while writing" in message and "state.safetensors" in message
    _intact(root, folder, text)
