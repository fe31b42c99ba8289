"""Running one sweep task where a dask worker (or this process) picked it up.

A task first checks its record (``pipeline.sweep.identity``): an up-to-date output is
``skipped``. Otherwise its ``bddn`` command line is parsed by the CLI's own parser and its
handler runs here, with stdout and stderr going to ``<sweep>/logs/<task>.log``; a
:class:`~cache.errors.BddnError` (bad input, missing data) makes the task ``failed`` with
that one line, and is not retried. Any other exception is left to dask, which retries the
task once; a worker killed under a task makes the scheduler run it again elsewhere (its
store chunks and fit checkpoint resume, and the lock the killed run left is taken over:
``cache.lock``).

Every attempt appends to the task's log under a header line (``### attempt N ...``), so a
retry keeps what the failed attempt printed and the log ends with the last attempt; the
number of headers is the task's ``attempts`` in the sweep table. The sweep removes the log
of each task it submits, so the count starts at one per sweep run.

Each task reports a row of the sweep table: status, seconds, peak resident memory of the
worker process during the task (``stages.resources.PhaseMonitor``), device and worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cache.errors import BddnError
from pipeline.sweep.identity import fit_task_identity, is_up_to_date, store_task_identity, write_record
from pipeline.sweep.plan import Task
from stages.device import resolve_device
from stages.resources import PhaseMonitor


#: Start of the line that opens each attempt's part of a task log.
ATTEMPT_HEADER = "### attempt "


@dataclass(frozen=True)
class TaskContext:
    """What every task of one sweep needs besides itself (small and picklable, sent to workers).

    Attributes:
        records: the folder of task records.
        logs: the folder of task logs.
        data, data_root: the subjects' data kind and folder.
        folders, lists: the image set's sources (for store identities).
        store_paths: model -> its store, for fit identities.
        threads: torch threads per task (0: torch's own default, e.g. on an existing cluster's workers).
        device: the device flag the tasks run with (``auto``, ``cpu``, ``cuda:1``...).
    """

    records: Path
    logs: Path
    data: str
    data_root: Path
    folders: tuple[Path, ...]
    lists: tuple[Path, ...]
    store_paths: dict[str, Path]
    threads: int
    device: str = "auto"


def task_identity(task: Task, context: TaskContext) -> str | None:
    """The task's identity now (None: a fit whose store is not complete yet)."""
    if task.kind == "store":
        return store_task_identity(task, context.folders, context.lists)
    return fit_task_identity(task, context.store_paths[task.model], data=context.data, root=context.data_root)


def task_log(context: TaskContext, task: Task) -> Path:
    """The log of ``task``: ``<sweep>/logs/<task key with / as __>.log``."""
    return context.logs / (task.key.replace("/", "__") + ".log")


def count_attempts(log: Path) -> int:
    """How many attempts wrote to ``log`` (its attempt headers; 0 when it does not exist)."""
    if not log.is_file():
        return 0
    with open(log, errors="replace") as stream:
        return sum(line.startswith(ATTEMPT_HEADER) for line in stream)


def base_row(task: Task, status: str, **values: Any) -> dict[str, Any]:
    """A sweep-table row for ``task`` (see ``pipeline.sweep.table``)."""
    return {"task": task.key, "kind": task.kind, "model": task.model, "subject": "+".join(task.subjects),
            "method": task.method, "status": status, "attempts": 0, "seconds": 0.0, "peak_memory_gb": float("nan"),
            "device": "", "worker": "", "error": "", "command": task.command, **values}


def run_task(task: Task, context: TaskContext, upstream: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``task`` unless it is up to date or its store failed; returns its table row."""
    if upstream is not None and upstream["status"] in ("failed", "blocked"):
        return base_row(task, "blocked", error=f"{upstream['task']} {upstream['status']}")
    import torch

    if context.threads > 0:
        torch.set_num_threads(context.threads)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    device = str(resolve_device(context.device))
    identity = task_identity(task, context)
    if is_up_to_date(context.records, task, identity):
        return base_row(task, "skipped", device=device, worker=worker)
    started = time.perf_counter()
    log = task_log(context, task)
    log.parent.mkdir(parents=True, exist_ok=True)
    attempt = count_attempts(log) + 1
    with PhaseMonitor() as monitor, monitor.phase("task"), open(log, "a") as stream, \
            contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        print(f"{ATTEMPT_HEADER}{attempt} on {worker} at {datetime.now().isoformat(timespec='seconds')}", flush=True)
        print(f"$ {task.command}", flush=True)
        error = _run_command(task)
    peak = monitor.record()["task"]["peak_rss_gb"]
    seconds = time.perf_counter() - started
    ran = {"attempts": attempt, "seconds": seconds, "peak_memory_gb": peak, "device": device, "worker": worker,
           "log": str(log)}
    if error:
        return base_row(task, "failed", error=error, **ran)
    write_record(context.records, task, task_identity(task, context))
    return base_row(task, "done", **ran)


def _run_command(task: Task) -> str:
    """Run the task's ``bddn`` command in this process; its one-line error, or "" on success."""
    from pipeline import cli

    args = cli.build_parser(only=cli.chosen_command(task.argv)).parse_args([*task.argv, "--no-progress"])
    try:
        status = int(args.handler(args) or 0)
    except BddnError as error:
        print(f"bddn {args.command}: error: {error}", flush=True)
        return str(error)
    return "" if status == 0 else f"bddn {args.command} exited with status {status}"
