"""Kill-and-resume: SIGKILL a running `bddn features` at several points; the resumed store equals an uninterrupted one.

Each run is a process forked from the tests' forkserver (tests/forkserver.py), which imported torch, timm and the
command once, so the four runs do not each pay the imports (about 3 s apiece on 2 cores); a run is still a whole
process, killed by SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from builders import REPO_ROOT
from forkserver import forkserver_context
from cache.store import FeatureStore
from pipeline import cli, runroot
from pipeline.imagesets.demo import write_demo_images

MODEL = "timm:test_vit"


def _arguments(run_root: Path, images: Path) -> list[str]:
    return ["--run-root", str(run_root), "features", "--model", MODEL, "--random-init", "--seed", "3",
            "--images", str(images), "--chunk-images", "4", "--batch-size", "2", "--grid", "8,4",
            "--decode-workers", "1", "--no-progress"]


def _done_chunks(store: Path) -> int:
    """Completion records on disk (one zarr chunk file per finished image block), read without opening the store."""
    folder = store / "chunk_done" / "c"
    return sum(1 for path in folder.iterdir() if path.name.isdigit()) if folder.is_dir() else 0  # not temp files


def _features_process(arguments: list[str], env: dict[str, str], stderr: str) -> None:
    """A forked run: the console command restricted to `features` (so the test depends on no other sub-command),
    with the test's environment and its standard error written to ``stderr``."""
    import torch

    from pipeline import cli

    os.environ.clear()
    os.environ.update(env)
    os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    torch.set_num_threads(1)  # as the reference run
    cli.COMMAND_MODULES = ("pipeline.commands.features",)
    raise SystemExit(cli.main(arguments))


def _start(run_root: Path, images: Path, stderr: Path) -> multiprocessing.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    process = forkserver_context().Process(target=_features_process,
                                           args=(_arguments(run_root, images), env, str(stderr)))
    process.start()
    return process


def _kill_after(process: multiprocessing.Process, store: Path, n_done: int, stderr: Path,
                timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while _done_chunks(store) < n_done:
        assert process.is_alive(), f"extraction ended before it could be killed: {stderr.read_text()}"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.005)
    process.kill()
    process.join()
    assert process.exitcode == -signal.SIGKILL


def _arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    return {name: np.asarray(group[name][:]) for name in sorted(group.array_keys())}


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = write_demo_images(tmp_path / "images", count=36, size=40).folder  # 9 chunks of 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("pipeline.commands.features",))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same intra-op threads as the subprocesses
    try:
        assert cli.main(_arguments(tmp_path / "reference", images)) == 0
    finally:
        torch.set_num_threads(threads)
    reference = runroot.feature_store_path(tmp_path / "reference", "images", MODEL)

    resumed = runroot.feature_store_path(tmp_path / "resumed", "images", MODEL)
    stderr = tmp_path / "stderr.txt"
    for kill_at in (1, 3, 6):  # after the 1st, 3rd and 6th completion records
        _kill_after(_start(tmp_path / "resumed", images, stderr), resumed, kill_at, stderr)
        pending = FeatureStore.open(resumed).pending_chunks()
        assert 0 < len(pending) <= 9 - kill_at
    final = _start(tmp_path / "resumed", images, stderr)
    final.join(timeout=240)
    assert final.exitcode == 0, stderr.read_text()
    assert "chunks to compute" in stderr.read_text()

    store = FeatureStore.open(resumed)
    assert store.is_complete() and store.n_chunks == 9
    expected, got = _arrays(reference), _arrays(resumed)
    assert sorted(expected) == sorted(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert not any(np.isnan(values).any() for values in got.values() if values.dtype.kind == "f")
