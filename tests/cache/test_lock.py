"""The per-output lock: a second holder is refused in one line, a dead holder's lock is taken over, a lock from
another host is respected, and the lock goes when its block ends, however it ends."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cache.errors import LockedError
from cache.lock import hold_lock, lock_path


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(target: Path, *, pid: int, host: str | None = None, started: str = "") -> Path:
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = started or datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "command": "bddn fit",
                                "started": started}))
    return path


def test_a_second_holder_is_refused_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "features" / "set" / "model.zarr"
    with hold_lock(target) as path:
        assert path == tmp_path / "features" / "set" / "model.zarr.lock"
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["command"] and holder["started"]
        with pytest.raises(LockedError) as refused:
            with hold_lock(target):
                pytest.fail("a second holder entered the block")
        message = str(refused.value)
        assert "\n" not in message and str(path) in message and f"pid {os.getpid()}" in message
        assert socket.gethostname() in message and holder["started"] in message and "wait for" in message
        assert path.is_file()   # the refused run leaves the holder's lock alone
    assert not path.exists()


@pytest.mark.parametrize("holder", ["exited", "pid reused"])
def test_a_stale_lock_on_this_host_is_taken_over_with_a_note(tmp_path: Path, holder: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "fits" / "m" / "subj01"
    if holder == "exited":
        path = _write_lock(target, pid=_dead_pid())
    else:   # a live pid, but of a process started after the lock was taken: not its holder
        path = _write_lock(target, pid=os.getpid(), started="2000-01-01T00:00:00+00:00")
    with hold_lock(target):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()
    note = capsys.readouterr().err
    assert f"took over {path}" in note and "no longer running" in note


def test_a_lock_from_another_host_is_respected(tmp_path: Path) -> None:
    target = tmp_path / "fits" / "m" / "subj01"
    path = _write_lock(target, pid=_dead_pid(), host="elsewhere.invalid")
    text = path.read_text()
    with pytest.raises(LockedError, match="on elsewhere.invalid \\(another host"):
        with hold_lock(target):
            pytest.fail("a lock from another host was taken")
    assert path.read_text() == text


def test_an_unreadable_lock_is_refused_and_named(tmp_path: Path) -> None:
    target = tmp_path / "store.zarr"
    lock_path(target).write_text("")
    with pytest.raises(LockedError, match="cannot be read.*delete .*store.zarr.lock"):
        with hold_lock(target):
            pytest.fail("an unreadable lock was taken")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_after_an_error(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "features" / "set" / "store.zarr"
    with pytest.raises(error):
        with hold_lock(target):
            raise error("the run failed")
    assert not (tmp_path / "features").exists()   # nor are the folders made for the lock left behind
    with hold_lock(target):   # and the next run takes it without a word
        pass


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path: Path) -> None:
    target = tmp_path / "store.zarr"
    with hold_lock(target) as path:
        path.unlink()   # deleted by hand, then taken by another run
        other = _write_lock(target, pid=os.getpid(), host="elsewhere.invalid").read_text()
    assert path.read_text() == other
