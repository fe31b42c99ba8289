"""`bddn sweep` on a 2-worker LocalCluster: the same stores and fits as the sequential commands, a worker killed
mid-sweep changes nothing, a broken subject fails alone and is listed, a finished sweep runs nothing."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from cache.lock import lock_path
from cache.store import FeatureStore
from forkserver import dask_workers_from_forkserver
from pipeline import cli, runroot
from pipeline.weights import install_all_weights
from stages.fit.result import FitResult

pytestmark = pytest.mark.slow

MODELS = ("mobilenet_v2", "efficientnet_lite0")
SUBJECTS = ("subj01", "subj02")


@pytest.fixture(autouse=True)
def _workers_from_forkserver(isolated_environment: None) -> Iterator[None]:
    """Local dask clusters fork their worker processes from the tests' forkserver (tests/forkserver.py), which
    imported torch, timm and the commands once, instead of spawning interpreters that import them (~5 s each)."""
    with dask_workers_from_forkserver():
        yield


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run root with 24 demo images, synthetic subjects 1 and 2 (300 vertices per hemisphere) planted from
    mobilenet_v2, and both embedded models' weights in its own torch home."""
    root = tmp_path_factory.mktemp("sweep-base")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(root / "torch"))
        patch.setenv("MPLBACKEND", "Agg")
        install_all_weights()
        runs = str(root / "runs")
        assert cli.main(["--run-root", runs, "demo-images", "--count", "24", "--size", "64"]) == 0
        assert cli.main(["--run-root", runs, "features", "--model", "mobilenet_v2", "--no-progress"]) == 0
        assert cli.main(["--run-root", runs, "synth", "--subjects", "1", "2", "--vertices", "300",
                         "--no-progress"]) == 0
    return root


@pytest.fixture(scope="module")
def sequential(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep's work done by hand: `bddn features` over both subjects' folders, then `bddn fit` per subject,
    at one torch thread like a sweep worker on two cores."""
    runs = tmp_path_factory.mktemp("sequential") / "runs"
    shutil.copytree(base / "runs", runs)
    folders = [str(runs / "synthetic" / subject / split / kind) for subject in SUBJECTS
               for split, kind in (("training_split", "training_images"), ("test_split", "test_images"))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TORCH_HOME", str(base / "torch"))
            for model in MODELS:
                assert cli.main(["--run-root", str(runs), "features", "--model", model, "--images", *folders,
                                 "--name", "synthetic", "--no-progress"]) == 0
                for subject in ("1", "2"):
                    assert cli.main(["--run-root", str(runs), "fit", "--model", model, "--imageset", "synthetic",
                                     "--subject", subject, "--method", "ridge", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return runs


def _copy(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(base / "runs", runs)
    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))
    return runs


def _sweep(runs: Path, *extra: str, models: tuple[str, ...] = MODELS) -> int:
    return cli.main(["--run-root", str(runs), "sweep", "--models", *models, "--subjects", "1", "2", "--methods",
                     "ridge", "--workers", "2", "--name", "t", *extra])


def _assert_same_outputs(runs: Path, reference: Path, models: tuple[str, ...] = MODELS) -> None:
    """Stores: same ids, features within 2 float16 ulps (dask and in-process extraction, stages.features.extract);
    fits: the same per-vertex tables and metrics."""
    for model in models:
        ours = FeatureStore.open(runroot.feature_store_path(runs, "synthetic", model))
        theirs = FeatureStore.open(runroot.feature_store_path(reference, "synthetic", model))
        assert ours.image_ids.tolist() == theirs.image_ids.tolist() and ours.is_complete()
        ids = ours.image_ids.tolist()
        a, b = ours.read(ids), theirs.read(ids)
        for mine, other in zip([*a.local, *a.global_], [*b.local, *b.global_]):
            np.testing.assert_allclose(mine.astype(np.float32), other.astype(np.float32),
                                       rtol=2 * 2.0 ** -10, atol=1e-6)
        for subject in SUBJECTS:
            fit = FitResult.load(runroot.fit_dir(runs, model, subject, "ridge"))
            expected = FitResult.load(runroot.fit_dir(reference, model, subject, "ridge"))
            assert list(fit.vertices) == list(expected.vertices)
            for column in fit.vertices:
                if np.asarray(fit.vertices[column]).dtype.kind in "fc":
                    np.testing.assert_allclose(fit.vertices[column], expected.vertices[column], rtol=1e-3, atol=1e-4,
                                               err_msg=f"{model}/{subject}: {column}")
                else:
                    np.testing.assert_array_equal(fit.vertices[column], expected.vertices[column])
            assert fit.metrics["mean_r2_test"] == pytest.approx(expected.metrics["mean_r2_test"], abs=1e-4)


def test_sweep_matches_the_sequential_commands_and_a_rerun_runs_nothing(
        base: Path, sequential: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    runs = _copy(base, tmp_path, monkeypatch)
    assert _sweep(runs) == 0
    table = pd.read_parquet(runs / "sweeps" / "t" / "sweep.parquet")
    assert len(table) == 6 and set(table["status"]) == {"done"} and set(table["device"]) == {"cpu"}
    fits = table[table["kind"] == "fit"]
    assert fits[["test_r2", "r2_nc", "hierarchy_score"]].notna().all().all()
    assert (table["peak_memory_gb"] > 0).all() and (table["seconds"] > 0).all()
    _assert_same_outputs(runs, sequential)
    report = runs / "sweeps" / "t"
    # 19 and 17 layers: the grid shows relative depth; the page the networks side by side and their agreement
    for name in ("ridge-grid-relative_depth", "ridge-grid-space", "ridge-grid-scale", "ridge-roi-profiles"):
        assert (report / "report" / f"{name}.png").is_file()
    for name in ("averages", "relative_depth", "depth_profiles"):
        assert (report / "compare" / "ridge" / f"{name}.png").is_file()
    page = (report / "report.html").read_text()
    assert "Networks in relative depth" in page and "Network-to-network agreement per ROI" in page
    assert "mobilenet_v2 (ridge)" in page and "efficientnet_lite0 (ridge)" in page
    planted = pd.read_parquet(report / "report" / "ridge-planted.parquet")   # against the planted answer
    assert len(planted) == 4 and set(planted["planted"]) == {"mobilenet_v2"} and "Against the planted answer" in page
    matched = planted[planted["model"] == "mobilenet_v2"]
    assert (matched["layers"] == 19).all() and planted["set_coverage"].between(0, 1).all()

    capsys.readouterr()
    assert _sweep(runs) == 0
    err = capsys.readouterr().err
    assert "all 6 task(s) up to date; nothing to run" in err and "local cluster" not in err
    assert set(pd.read_parquet(report / "sweep.parquet")["status"]) == {"skipped"}

    (runs / "fits" / "mobilenet_v2" / "subj02-ridge" / "fit.json").touch()   # same bytes: still up to date
    for path in (runs / "synthetic" / "subj01" / "training_split" / "training_fmri").iterdir():
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))   # subject data rewritten
    assert _sweep(runs, "--no-report", models=("mobilenet_v2",)) == 0
    statuses = dict(pd.read_parquet(report / "sweep.parquet")[["task", "status"]].to_numpy())
    assert statuses == {"store/mobilenet_v2": "skipped", "fit/mobilenet_v2/subj01/ridge": "done",
                        "fit/mobilenet_v2/subj02/ridge": "skipped"}


def _kill_worker_running(log: Path, lock: Path, killed: list[int]) -> None:
    """SIGKILL the process that has ``log`` open (a dask worker running that task), once ``lock`` (its output's
    lock, cache.lock) appears."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not killed:
        for process in psutil.Process().children(recursive=True) if lock.is_file() else ():
            try:
                if any(Path(item.path) == log for item in process.open_files()):
                    os.kill(process.pid, signal.SIGKILL)
                    killed.append(process.pid)
                    return
            except psutil.Error:
                continue
        time.sleep(0.05)


def test_a_worker_killed_mid_sweep_leaves_identical_outputs(base: Path, sequential: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _copy(base, tmp_path, monkeypatch)
    killed: list[int] = []
    log = runs / "sweeps" / "t" / "logs" / "store__mobilenet_v2.log"
    lock = lock_path(runroot.feature_store_path(runs, "synthetic", "mobilenet_v2"))
    killer = threading.Thread(target=_kill_worker_running, args=(log, lock, killed), daemon=True)
    killer.start()
    assert _sweep(runs, models=("mobilenet_v2",)) == 0
    killer.join()
    assert killed, "no worker was killed"
    table = pd.read_parquet(runs / "sweeps" / "t" / "sweep.parquet")
    assert set(table["status"]) == {"done"}
    store_worker = table.set_index("task").loc["store/mobilenet_v2", "worker"]
    assert not store_worker.endswith(f":{killed[0]}")   # it ran again on another (or a restarted) worker
    assert table.set_index("task").loc["store/mobilenet_v2", "attempts"] == 2
    text = log.read_text()   # both attempts' output; the second took over the store lock the killed worker held
    assert "### attempt 1 " in text and f"from pid {killed[0]} " in text.split("### attempt 2 ")[1]
    assert not lock.exists()
    _assert_same_outputs(runs, sequential, models=("mobilenet_v2",))


def test_a_broken_subject_fails_alone_and_is_listed(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """On an existing cluster (--scheduler), as dask-jobqueue or dask-kubernetes users run it."""
    from distributed import LocalCluster

    runs = _copy(base, tmp_path, monkeypatch)
    fmri = runs / "synthetic" / "subj02" / "training_split" / "training_fmri"
    for path in fmri.iterdir():
        path.write_bytes(b"not an array")
    capsys.readouterr()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        status = cli.main(["--run-root", str(runs), "sweep", "--models", "mobilenet_v2", "--subjects", "1", "2", "7",
                           "--methods", "ridge", "--scheduler", cluster.scheduler_address, "--name", "broken",
                           "--no-report"])
    assert status == 1
    err = capsys.readouterr().err
    table = pd.read_parquet(runs / "sweeps" / "broken" / "sweep.parquet").set_index("task")
    assert table.loc["store/mobilenet_v2", "status"] == "done"
    assert table.loc["fit/mobilenet_v2/subj01/ridge", "status"] == "done"
    assert table.loc["fit/mobilenet_v2/subj02/ridge", "status"] == "failed"
    assert "training_fmri" in table.loc["fit/mobilenet_v2/subj02/ridge", "error"]
    assert table.loc["fit/mobilenet_v2/subj07/ridge", "status"] == "failed"
    assert "subj07 does not exist" in table.loc["fit/mobilenet_v2/subj07/ridge", "error"]
    assert "2 task(s) did not finish" in err
    assert "rerun alone: bddn --run-root" in err and "--subject 2 --method ridge" in err
    assert "or rerun the sweep (finished tasks are skipped): bddn --run-root" in err and "--scheduler tcp://" in err
    assert f"to run on {cluster.scheduler_address}" in err
    assert (runroot.fit_dir(runs, "mobilenet_v2", "subj01", "ridge") / "fit.json").is_file()
