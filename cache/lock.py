"""One run at a time per output: a lock file beside a feature store or a fit folder.

``bddn features`` holds ``<store>.zarr.lock`` and ``bddn fit`` holds ``<fit folder>.lock``
while they work, so a second run on the same output refuses at once, in one line naming
the lock file and its holder, instead of repeating the work. The file is created
atomically (``O_CREAT | O_EXCL``) and holds the holder's pid, host, command line and start
time as JSON. It sits beside the output, not inside it, because a store rebuilt with
``--overwrite`` and a fit swapped in by ``pipeline.publish`` replace the output's folder.

A lock whose holder is gone (same host, and its pid no longer runs or now belongs to a
process started after the lock) is taken over with a note on stderr: a run killed by
SIGKILL or a dask worker lost under a sweep task leaves one. A lock taken on another host is
respected, since its pid cannot be checked from here. The lock is released when its
``with`` block exits, on success, on an error and on KeyboardInterrupt alike.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import psutil

from cache.errors import LockedError

LOCK_SUFFIX = ".lock"
#: Seconds of slack when comparing a process's creation time with a lock's start time (recorded to the second).
CLOCK_SLACK = 1.0
#: Creation attempts: a lock released or taken over by another run meanwhile is looked at again, a few times.
TRIES = 3


def lock_path(target: Path) -> Path:
    """The lock file of ``target``: ``<target>.lock`` beside it."""
    return target.with_name(target.name + LOCK_SUFFIX)


@contextlib.contextmanager
def hold_lock(target: Path) -> Iterator[Path]:
    """Hold the lock of ``target`` (a store or fit folder) for the ``with`` block; yields the lock file.

    Raises LockedError (one line) when another live run, or a run on another host, holds it. Folders made for
    the lock file are removed with it when they are left empty, so a run that fails early leaves no trace.
    """
    path = lock_path(target)
    created = _missing_folders(path.parent)
    text = json.dumps(_holder())
    try:
        _acquire(path, target, text)
        try:
            yield path
        finally:
            _release(path, text)
    finally:
        for folder in created:   # deepest first; one that now holds anything stays
            with contextlib.suppress(OSError):
                folder.rmdir()


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _holder() -> dict[str, Any]:
    """This thread's entry: pid, host, command line, start time (ISO, local time with its offset) and thread id
    (two threads of one process, such as a sweep worker's, never write the same text)."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(sys.argv), "started": started,
            "thread": threading.get_ident()}


def _acquire(path: Path, target: Path, text: str) -> None:
    """Create ``path`` holding ``text``, taking over a stale lock; LockedError when a live run holds it."""
    holder = None
    for _ in range(TRIES):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileNotFoundError:   # another run's early exit removed the empty folder just made
            continue
        except FileExistsError:
            try:
                holder, held = _read(path)
            except FileNotFoundError:   # released meanwhile
                continue
            if holder is None or not _is_stale(holder):
                raise LockedError(_held_message(path, target, holder))
            if _take_over(path, held):
                print(f"lock: took over {path} from pid {holder['pid']} on {holder['host']} (since "
                      f"{holder['started']}), which is no longer running", file=sys.stderr, flush=True)
            continue
        with os.fdopen(descriptor, "w") as stream:
            stream.write(text)
        return
    raise LockedError(_held_message(path, target, holder))


def _read(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The holder recorded in ``path`` (None when its content is not a lock's) and the file's text."""
    text = path.read_text()
    try:
        holder = json.loads(text)
        holder["pid"], holder["host"] = int(holder["pid"]), str(holder["host"])
        holder["since"] = datetime.datetime.fromisoformat(holder["started"]).timestamp()
    except (ValueError, KeyError, TypeError):
        return None, text
    return holder, text


def _is_stale(holder: dict[str, Any]) -> bool:
    """True when the holder ran on this host and its process is gone (or its pid was reused since)."""
    if holder["host"] != socket.gethostname():
        return False
    try:
        process = psutil.Process(holder["pid"])
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        created = process.create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False
    return created > holder["since"] + CLOCK_SLACK


def _take_over(path: Path, stale: str) -> bool:
    """Remove the stale lock whose text is ``stale``; False when another run replaced it meanwhile (then put back).

    The lock is first renamed to a name private to this thread, so of several runs taking it over at once
    only one removes a given file, and a fresh lock created after ``stale`` was read is restored, not removed.
    """
    private = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}")
    try:
        os.replace(path, private)
    except FileNotFoundError:
        return False
    try:
        if private.read_text() == stale:
            return True
        with contextlib.suppress(FileExistsError):
            os.link(private, path)
        return False
    finally:
        private.unlink()


def _release(path: Path, text: str) -> None:
    """Remove the lock if it is still ours (it may have been deleted by hand and taken by another run)."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            path.unlink()


def _held_message(path: Path, target: Path, holder: dict[str, Any] | None) -> str:
    if holder is None:
        return (f"{target} is in use by another run: its lock file {path} exists but cannot be read; wait for that "
                f"run to finish and run again, or delete {path} if no run is using {target}")
    elsewhere = "" if holder["host"] == socket.gethostname() else " (another host: its pid cannot be checked here)"
    return (f"{target} is in use by another run: pid {holder['pid']} on {holder['host']}{elsewhere} since "
            f"{holder['started']} holds {path}; wait for that run to finish (then run again if still needed), or "
            f"delete {path} if that run is gone")
