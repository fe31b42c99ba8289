"""Kill a fit after its first epoch's checkpoint, resume it, and reach the uninterrupted result exactly."""

from __future__ import annotations

import os
import pickle
import signal

import numpy as np
import pytest
import torch

from cache.errors import ConfigError, StoreMismatchError
from forkserver import forkserver_context
from stages.fit.checkpoint import CHECKPOINT_JSON
from stages.fit.config import FitConfig
from stages.fit.train import fit_factortopy
from train_stubs import Killed, interrupt_after_first_checkpoint

CFG = FitConfig(epochs=2, batch_size=16, warm_start="none", eval_batch_size=32, resident="off", shuffle_buffer=24)


def _assert_same(a, b):
    assert a.weights.keys() == b.weights.keys()
    for key in a.weights:
        torch.testing.assert_close(a.weights[key], b.weights[key], rtol=0, atol=0)
    np.testing.assert_array_equal(a.vertices["r2_test"], b.vertices["r2_test"])


def test_resume_after_interruption_equals_uninterrupted(store, subject, tmp_path, monkeypatch):
    straight = fit_factortopy(store, subject, CFG, checkpoint_dir=tmp_path / "straight", progress=False)
    with monkeypatch.context() as patch:
        interrupt_after_first_checkpoint(patch)
        with pytest.raises(Killed):
            fit_factortopy(store, subject, CFG, checkpoint_dir=tmp_path / "ck", progress=False)
    assert (tmp_path / "ck" / CHECKPOINT_JSON).is_file()
    resumed = fit_factortopy(store, subject, CFG, checkpoint_dir=tmp_path / "ck", progress=False)
    _assert_same(straight, resumed)
    assert [row["epoch"] for row in resumed.history] == [1, 2]


def test_resume_refuses_other_layers_or_config(store, subject, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        interrupt_after_first_checkpoint(patch)
        with pytest.raises(Killed):
            fit_factortopy(store, subject, CFG, checkpoint_dir=tmp_path / "ck", progress=False)
    from dataclasses import replace
    with pytest.raises(StoreMismatchError, match="layers"):
        fit_factortopy(store, subject, replace(CFG, layers=("block0", "block1")), checkpoint_dir=tmp_path / "ck",
                       progress=False)
    with pytest.raises(ConfigError, match="lr"):
        fit_factortopy(store, subject, replace(CFG, lr=5e-3), checkpoint_dir=tmp_path / "ck", progress=False)
    # more epochs is a resumable change
    longer = fit_factortopy(store, subject, replace(CFG, epochs=3), checkpoint_dir=tmp_path / "ck", progress=False)
    assert [row["epoch"] for row in longer.history] == [1, 2, 3]


def _fit_killed_after_first_checkpoint(store_path: str, inputs: str, checkpoint_dir: str, threads: int) -> None:
    """A forked process: the fit of ``inputs``, SIGKILLed right after writing its first epoch's checkpoint."""
    from cache.store import FeatureStore
    from stages.fit import train as train_module

    torch.set_num_threads(threads)  # the same reductions as the test's process: bit-identical
    real = train_module.save_checkpoint

    def save_then_kill(directory, **kwargs):
        real(directory, **kwargs)
        if kwargs["state"].epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    train_module.save_checkpoint = save_then_kill
    with open(inputs, "rb") as handle:
        subject, cfg = pickle.load(handle)
    train_module.fit_factortopy(FeatureStore.open(store_path), subject, cfg, checkpoint_dir=checkpoint_dir,
                                progress=False)


@pytest.mark.slow
def test_resume_after_sigkill(store, subject, tmp_path):
    """The killed fit is a process forked from the tests' forkserver (tests/forkserver.py), which has torch and
    the trainer imported already."""
    straight = fit_factortopy(store, subject, CFG, checkpoint_dir=None, progress=False)
    inputs = tmp_path / "inputs.pickle"
    inputs.write_bytes(pickle.dumps((subject, CFG)))
    process = forkserver_context().Process(target=_fit_killed_after_first_checkpoint,
                                           args=(str(store.path), str(inputs), str(tmp_path / "ck"),
                                                 torch.get_num_threads()))
    process.start()
    process.join()
    assert process.exitcode == -signal.SIGKILL
    resumed = fit_factortopy(store, subject, CFG, checkpoint_dir=tmp_path / "ck", progress=False)
    _assert_same(straight, resumed)
