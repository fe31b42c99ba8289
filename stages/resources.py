"""Seconds and peak host memory per named phase of a run, recorded in every fit.

Memory limits at scale are part of the product (a subject's fit must fit a laptop or a
shared node), so a run reports what each phase took: wall seconds and the peak resident
set size (RSS) of this process and its children, sampled by a background thread. The
sampler costs one ``/proc`` read per interval; phases nest by name only (the innermost
open phase is the one charged). Counters registered with ``track`` (e.g. the gigabytes a
feature store has decoded) are recorded per phase as their increase over it.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil

GB = 1e9
#: Seconds between two samples of the resident set size.
SAMPLE_SECONDS = 0.05


def resident_bytes(process: psutil.Process) -> int:
    """Resident set size of ``process`` and every child it has now (children that end meanwhile are skipped)."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


def free_memory(device: "torch.device") -> int:
    """Free bytes on ``device``: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere), so buffers
    one phase freed do not stay in the next phase's resident set."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc
        pass


class PhaseMonitor:
    """Times named phases and samples their peak RSS; ``record()`` gives ``{phase: {seconds, peak_rss_gb}}``.

    Use as a context manager (starts and stops the sampling thread) and wrap each phase in
    ``with monitor.phase(name):``. A phase entered twice adds its seconds and keeps the higher peak.
    """

    def __init__(self, *, interval: float = SAMPLE_SECONDS) -> None:
        self.interval = interval
        self._process = psutil.Process()
        self._stack: list[str] = []
        self._seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._peaks: dict[str, int] = {}
        self._counters: dict[str, Callable[[], float]] = {}
        self._counted: dict[str, dict[str, float]] = {}
        self._at_start: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PhaseMonitor":
        self._thread = threading.Thread(target=self._sample_forever, name="phase-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample_forever(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        rss = resident_bytes(self._process)
        with self._lock:
            for name in self._stack:
                self._peaks[name] = max(self._peaks.get(name, 0), rss)

    def track(self, name: str, read: Callable[[], float]) -> None:
        """Record, for every phase entered from now on, how much ``read()`` (a count that only grows) rose during it."""
        with self._lock:
            self._counters[name] = read

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the block's wall time and peak RSS to ``name`` (and to every enclosing phase's peak)."""
        with self._lock:
            self._stack.append(name)
            self._started[name] = time.perf_counter()
            self._seconds.setdefault(name, 0.0)
            self._at_start[name] = {key: read() for key, read in self._counters.items()}
        self._sample()
        try:
            yield
        finally:
            self._sample()
            with self._lock:
                self._stack.remove(name)
                self._seconds[name] += time.perf_counter() - self._started.pop(name)
                counted = self._counted.setdefault(name, {})
                for key, start in self._at_start.pop(name).items():
                    counted[key] = counted.get(key, 0.0) + self._counters[key]() - start

    def record(self) -> dict[str, dict[str, float]]:
        """Per phase, in the order first entered: wall ``seconds``, ``peak_rss_gb`` and each tracked counter's
        increase over its finished visits (a phase still open counts its seconds so far and says ``running``)."""
        now = time.perf_counter()
        with self._lock:
            out = {}
            for name, seconds in self._seconds.items():
                running = name in self._started
                entry = {"seconds": round(seconds + (now - self._started[name] if running else 0.0), 3),
                         "peak_rss_gb": round(self._peaks.get(name, 0) / GB, 3),
                         **{key: round(value, 6) for key, value in self._counted.get(name, {}).items()}}
                out[name] = {**entry, "running": True} if running else entry
            return out
