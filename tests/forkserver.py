"""One forkserver for the tests that start many processes: it imports torch, timm, dask and the commands once.

Starting a fresh interpreter and importing those takes about 5 s on 2 cores; a process forked from the
forkserver has them already. :func:`forkserver_context` gives the ``multiprocessing`` context of tests that
start and kill their own processes; :func:`dask_workers_from_forkserver` makes every dask ``LocalCluster``
started inside it fork its worker processes there (dask's own ``forkserver`` method) instead of spawning them.

A forked process inherits the environment the forkserver started with (the first test's), not the current
test's: callers pass the current one on (:data:`TEST_VARIABLES` are the ones the tests change).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import forkserver
from multiprocessing.context import BaseContext

#: What the forkserver imports before it forks anything.
PRELOAD = ["numpy", "pandas", "dask", "distributed", "torch", "timm", "pipeline.cli", "pipeline.commands.features",
           "pipeline.commands.fit", "pipeline.sweep.tasks", "stages.features.scaleout", "stages.fit.train"]
#: Environment variables that tests set (tests/conftest.py, and TORCH_HOME of the sweep tests).
TEST_VARIABLES = ("BDDN_RUN_ROOT", "TORCH_HOME", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                  "MPLCONFIGDIR", "MPLBACKEND")


#: The forkserver's own environment on top of the test's: what dask sets before it spawns a worker
#: (``distributed.nanny.pre-spawn-environ``), which must hold before torch and BLAS are imported.
SERVER_VARIABLES = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                    "MALLOC_TRIM_THRESHOLD_": "65536", "PYTHONHASHSEED": "6640"}


def forkserver_context() -> BaseContext:
    """The ``forkserver`` context, its server started with :data:`PRELOAD` and :data:`SERVER_VARIABLES` (once per
    test session): a forked process runs torch on one thread, as a dask worker does."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    saved = {name: os.environ.get(name) for name in SERVER_VARIABLES}
    os.environ.update(SERVER_VARIABLES)
    try:
        forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value
    return context


@contextmanager
def dask_workers_from_forkserver() -> Iterator[None]:
    """Inside: local dask clusters fork their workers from the test forkserver and hand each worker the
    current values of :data:`TEST_VARIABLES` (read when the cluster starts)."""
    import dask
    import distributed  # noqa: F401  (its config defaults must exist before the override, or leaving it drops them)

    forkserver_context()
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver",
                          "distributed.nanny.environ": {name: "" for name in TEST_VARIABLES}}):
        yield
