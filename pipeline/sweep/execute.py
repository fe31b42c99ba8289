"""Running a sweep's tasks on dask.distributed, with a progress line per finished task.

Cluster: an existing scheduler (``--scheduler ADDRESS``: a cluster started by
dask-jobqueue, dask-kubernetes or ``dask scheduler``/``dask worker`` by hand), or a
``LocalCluster`` of ``--workers`` processes, one task at a time each (``threads_per_worker=1``;
torch gets ``threads`` threads per task) and the machine's memory split evenly between them.

GPUs are worker resources: when the tasks run on CUDA, each task asks for ``{"GPU": 1}``,
so a GPU runs one extraction or fit at a time. Locally that is one worker per GPU, through
dask-cuda's ``LocalCUDACluster`` (which pins each worker to its GPU) when it is installed,
else one worker on the first GPU. Workers of an existing cluster must be started with
``--resources GPU=1`` (one per GPU) for GPU tasks to be scheduled.

Tasks whose output is up to date are never submitted: a finished sweep starts no cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import uuid
import warnings
from typing import Any, Callable, Iterator, Sequence

from pipeline.sweep.plan import Task
from pipeline.sweep.tasks import TaskContext, base_row, count_attempts, run_task, task_log

#: How many times dask runs a task again after an unexpected exception (killed workers are rescheduled apart).
RETRIES = 1


#: Host memory to plan per local worker (a worker running an embedded CNN's extraction or fit peaked at ~2.7 GB).
GB_PER_WORKER = 4


def default_workers() -> int:
    """Worker processes of a local cluster: half the cores, at least two (on two cores, two one-thread workers
    finished bench/sweep.py's sweep in half the time of one two-thread worker), at most one per 4 GB of memory."""
    import psutil

    by_memory = int(psutil.virtual_memory().total / 1e9 // GB_PER_WORKER)
    return max(1, min(max(2, (os.cpu_count() or 1) // 2), by_memory))


def uses_gpu(device: str) -> bool:
    """Whether tasks run with ``device`` need a GPU: ``cuda``/``cuda:N``, or ``auto`` on a machine with CUDA."""
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


@contextlib.contextmanager
def open_client(*, workers: int, scheduler: str | None, gpu: bool) -> Iterator[Any]:
    """A dask.distributed client on ``scheduler``, else on a local cluster sized as the module doc says."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    if gpu:
        cluster = _local_gpu_cluster()
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    with cluster, Client(cluster) as client:
        yield client


def _local_gpu_cluster() -> Any:
    import torch
    from distributed import LocalCluster

    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        if torch.cuda.device_count() > 1:
            warnings.warn("dask-cuda is not installed: the sweep uses one worker on the first GPU; install dask-cuda "
                          "for one worker per GPU", stacklevel=3)
        return LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                            resources={"GPU": 1}, silence_logs=logging.ERROR)
    return LocalCUDACluster(threads_per_worker=1, dashboard_address=None, resources={"GPU": 1})


def submit_tasks(client: Any, tasks: Sequence[Task], context: TaskContext, *, gpu: bool,
                 report: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Submit ``tasks`` (a fit after its store when both run) and collect one row per task as each finishes.

    Each task's log from an earlier sweep run is removed first, so its attempts are counted from one
    (``pipeline.sweep.tasks``); a task failing every attempt gets the count from its log.
    """
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    resources = {"GPU": 1} if gpu else None
    futures: dict[str, Any] = {}
    for task in tasks:
        task_log(context, task).unlink(missing_ok=True)
        upstream = futures.get(task.depends) if task.depends else None
        futures[task.key] = client.submit(run_task, task, context, upstream, key=f"{task.key}-{token}",
                                          resources=resources, retries=RETRIES, pure=False)
    by_future = {future.key: task for task, future in zip(tasks, futures.values())}
    rows = []
    for future in as_completed(list(futures.values())):
        task = by_future[future.key]
        try:
            row = future.result()
        except Exception as error:  # a bug or a worker lost too often: the task fails, the others go on
            log = task_log(context, task)
            row = base_row(task, "failed", error=_one_line(error), attempts=count_attempts(log),
                           log=str(log) if log.is_file() else "")
        rows.append(row)
        report(row)
    return rows


def progress_line(done: int, total: int, row: dict[str, Any]) -> str:
    """``[ 3/12] done     fit/mobilenet_v2/subj01/ridge   12.3 s  0.81 GB  cpu``."""
    width = len(str(total))
    memory = f"{row['peak_memory_gb']:.2f} GB" if row["peak_memory_gb"] == row["peak_memory_gb"] else "-"
    line = (f"[{done:>{width}}/{total}] {row['status']:<8} {row['task']:<40} {row['seconds']:7.1f} s  "
            f"{memory:>8}  {row['device']}")
    retried = f"  after {row['attempts']} attempts" if row["attempts"] > 1 else ""
    return line + retried + (f"  ({row['error']})" if row["error"] else "")


def printer(total: int, *, already: int = 0) -> Callable[[dict[str, Any]], None]:
    """A ``report`` callback printing a progress line to stderr per finished task."""
    count = [already]

    def report(row: dict[str, Any]) -> None:
        count[0] += 1
        print(progress_line(count[0], total, row), file=sys.stderr, flush=True)

    return report


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:300]
