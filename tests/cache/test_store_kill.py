"""A writer process killed with SIGKILL mid-store: resuming gives the uninterrupted store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from builders import REPO_ROOT, TESTS_DIR, random_features
from cache.store import FeatureStore, StoreLayout

# ~5 MB of float64 input per block, so a block takes tens of ms and the kills land mid-store
LAYOUT = StoreLayout(layer_names=("a", "b", "c"), n_channels=(256, 384, 128), grids=(8, 4), chunk_images=10)
IDS = [f"demo-{index:05d}" for index in range(200)]

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from cache.store import FeatureStore
    sys.path.insert(0, sys.argv[2])
    from test_store_kill import chunk_features
    store = FeatureStore.open(sys.argv[1])
    for chunk in store.pending_chunks():
        local, global_ = chunk_features(store, chunk)
        store.write_chunk(chunk, local=local, global_=global_)
""")


def chunk_features(store: FeatureStore, chunk: int) -> tuple[dict[int, list[np.ndarray]], list[np.ndarray]]:
    """Deterministic features of one block (the same in every process)."""
    rows = store.chunk_rows(chunk)
    return random_features(store.layout, rows.stop - rows.start, seed=chunk)


def kill_after(store: FeatureStore, n_done: int) -> None:
    """Start a writer process and SIGKILL it once ``n_done`` more blocks are recorded."""
    before = store.n_chunks - len(store.pending_chunks())
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR)])}
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), str(Path(__file__).parent)], env=env)
    try:
        while store.n_chunks - len(store.pending_chunks()) < before + n_done and process.poll() is None:
            time.sleep(0.002)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, f"the writer exited by itself (code {process.returncode})"


@pytest.mark.slow
def test_sigkilled_writer_resumes_to_the_uninterrupted_store(tmp_path):
    reference = FeatureStore.create(tmp_path / "reference.zarr", image_ids=IDS, layout=LAYOUT, provenance={})
    for chunk in range(reference.n_chunks):
        reference.write_chunk(chunk, **dict(zip(("local", "global_"), chunk_features(reference, chunk))))

    store = FeatureStore.create(tmp_path / "killed.zarr", image_ids=IDS, layout=LAYOUT, provenance={})
    for n_done in (1, 2, 3):
        kill_after(store, n_done)
        store = FeatureStore.create(tmp_path / "killed.zarr", image_ids=IDS, layout=LAYOUT, provenance={})
    assert store.pending_chunks(), "the writer finished before it was killed; the test proves nothing"
    for chunk in store.pending_chunks():
        store.write_chunk(chunk, **dict(zip(("local", "global_"), chunk_features(store, chunk))))
    assert store.is_complete()
    for grid in LAYOUT.grids:
        expected, resumed = reference.read(IDS, grid=grid), store.read(IDS, grid=grid)
        for layer in range(LAYOUT.n_layers):
            np.testing.assert_array_equal(resumed.local[layer], expected.local[layer])
            np.testing.assert_array_equal(resumed.global_[layer], expected.global_[layer])
