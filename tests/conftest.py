"""Shared test setup: every cache and data folder under tmp_path, no network, markers; the store and subject.

``store`` is a finished random feature store (``builders.random_store``), sized by the closest
``@pytest.mark.store(**sizes)`` marker (a module's ``pytestmark`` or a test's own); ``subject``
is a subject planted on it (``builders.planted_subject``). ``make_store`` and ``make_subject``
build more of them, with other sizes, inside a test.
"""

from __future__ import annotations

import gc
import itertools
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builders import planted_subject, random_store
from cache.store import FeatureStore
from stages.subject import Subject


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Collect the garbage, then move every survivor (the imported torch, transformers, timm... and earlier
    tests' module fixtures: 400,000-600,000 objects) to the collector's permanent generation, so that a full
    collection inside the test scans only what the test made. Every FactorTopy fit runs three
    (``stages.resources.release_free_memory``): each took 0.2-0.4 s in the test process, against
    milliseconds in a ``bddn`` command. Frozen objects are still freed when their count drops to zero."""
    gc.collect()
    gc.freeze()


class _NetworkBlocked(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point caches and the run root at a temporary folder and refuse outbound connections."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("BDDN_RUN_ROOT", str(home / "runs"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("MPLCONFIGDIR", str(home / "mpl"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("SUBJECTS_DIR", raising=False)

    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise _NetworkBlocked(f"tests must not touch the network (tried {address!r})")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread during the test, then restore the count.

    For tests whose tensors are tiny (a few vertices, a 64-image store): a second thread cannot speed
    up an op on a few hundred numbers, but each op that torch splits still waits for it, which costs
    milliseconds per op when another process holds the other core (a 1-epoch fit took 4x longer).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., FeatureStore]:
    """``make_store(path=None, **sizes)``: a finished random store (``builders.random_store``) under tmp_path."""
    numbers = itertools.count()

    def make(path: Path | None = None, **sizes: object) -> FeatureStore:
        return random_store(path or tmp_path / f"features-{next(numbers)}.zarr", **sizes)

    return make


@pytest.fixture
def store(request: pytest.FixtureRequest, make_store: Callable[..., FeatureStore]) -> FeatureStore:
    """The test's random feature store, with the sizes of the closest ``store`` marker (else the defaults)."""
    marker = request.node.get_closest_marker("store")
    return make_store(**(marker.kwargs if marker else {}))


@pytest.fixture
def make_subject(request: pytest.FixtureRequest) -> Callable[..., tuple[Subject, dict]]:
    """``make_subject(store=None, **sizes)``: a planted subject and its truth, on the ``store`` fixture by default."""

    def make(store: FeatureStore | None = None, **sizes: object) -> tuple[Subject, dict]:
        return planted_subject(request.getfixturevalue("store") if store is None else store, **sizes)

    return make


@pytest.fixture
def subject(store: FeatureStore) -> Subject:
    """A subject planted on the ``store`` fixture (``builders.planted_subject`` defaults: 6 vertices, seed 1)."""
    return planted_subject(store)[0]
