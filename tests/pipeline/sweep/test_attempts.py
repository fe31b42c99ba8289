"""A retried sweep task keeps each attempt's output in its log and the table counts the attempts: the real
submit_tasks and run_task on an in-process dask cluster, with a `bddn features` handler that fails at first."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest

from pipeline import runroot
from pipeline.commands import features as features_command
from pipeline.imagesets.demo import write_demo_images
from pipeline.sweep.execute import RETRIES, submit_tasks
from pipeline.sweep.plan import Task
from pipeline.sweep.table import build_table, write_table
from pipeline.sweep.tasks import ATTEMPT_HEADER, TaskContext, task_log


def _store_task(root: Path) -> tuple[Task, TaskContext]:
    folder = write_demo_images(root / "images", count=2, size=32).folder
    store = runroot.feature_store_path(root, "images", "fake")
    task = Task(key="store/fake", kind="store", model="fake", subjects=(), method="",
                argv=("--run-root", str(root), "features", "--model", "fake", "--images", str(folder)),
                outputs=(store,))
    context = TaskContext(records=root / "sweeps" / ".records", logs=root / "sweeps" / "t" / "logs",
                          data="synthetic", data_root=root, folders=(folder,), lists=(), store_paths={"fake": store},
                          threads=0)
    return task, context


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A one-worker dask cluster in this process (threads, so the test's monkeypatching reaches the task)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.mark.parametrize("failures, status", [(1, "done"), (RETRIES + 1, "failed")])
def test_a_retried_task_keeps_every_attempts_log_and_the_table_counts_them(
        client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int, status: str) -> None:
    task, context = _store_task(tmp_path)
    calls = []

    def flaky_features(args: argparse.Namespace) -> int:
        calls.append(len(calls) + 1)
        print(f"output of call {len(calls)}")
        if len(calls) <= failures:
            raise RuntimeError(f"call {len(calls)} died")   # not a BddnError: dask retries it
        return 0

    monkeypatch.setattr(features_command, "run", flaky_features)
    log = task_log(context, task)
    log.parent.mkdir(parents=True)
    log.write_text(f"{ATTEMPT_HEADER}1 of an earlier sweep run\n")   # not counted: the sweep starts a new log
    rows = submit_tasks(client, [task], context, gpu=False, report=lambda row: None)

    assert calls == [1, 2]
    [row] = rows
    assert row["status"] == status and row["attempts"] == 2 and row["log"] == str(log)
    text = log.read_text()
    assert "earlier sweep run" not in text
    headers = [line for line in text.splitlines() if line.startswith(ATTEMPT_HEADER)]
    assert [line.split()[2] for line in headers] == ["1", "2"]
    first, second = text.split(headers[1])
    assert "output of call 1" in first and "output of call 2" in second   # the log ends with the last attempt

    table = build_table([task], rows)
    assert table["attempts"].tolist() == [2] and table["attempts"].dtype == "int64"
    paths = write_table(table, tmp_path)
    assert pd.read_parquet(paths["parquet"])["attempts"].tolist() == [2]
    assert "attempts" in paths["md"].read_text()
