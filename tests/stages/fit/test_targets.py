"""Training targets: z-scored rows served per batch equal the materialised array, and cost no copy."""

from __future__ import annotations

import tracemalloc

import numpy as np
import torch

from stages.fit.streaming import StreamedFeatures
from stages.fit.targets import StandardisedRows, standardise
from stages.fit.train import eval_batch_size
from stages.fit.config import FitConfig


def test_rows_z_scored_per_request_equal_the_materialised_array():
    rng = np.random.default_rng(0)
    responses = rng.normal(5.0, 2.0, (40, 6)).astype(np.float32)
    rows = np.sort(rng.choice(40, 25, replace=False))
    standard = standardise(responses, rows)
    lazy = StandardisedRows(responses, rows, standard)
    whole = standard.apply_rows(responses, rows)
    assert lazy.shape == whole.shape and len(lazy) == 25
    positions = np.array([3, 0, 24, 7])
    np.testing.assert_array_equal(lazy[positions], whole[positions])
    np.testing.assert_array_equal(np.asarray(lazy), whole)
    np.testing.assert_array_equal(standard.apply(responses[rows]), whole)


def test_a_streamed_source_serves_z_scored_batches_without_copying_the_responses(store, make_subject):
    subject, _ = make_subject(n_vertices=4000)
    train = subject.splits["train"]
    standard = standardise(subject.responses, train)
    lazy = StandardisedRows(subject.responses, train, standard)
    tracemalloc.start()
    source = StreamedFeatures(store, subject.stimulus_ids[train], lazy, layer_indices=[0], grid=8,
                              device=torch.device("cpu"))
    allocated, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert allocated < subject.responses[train].nbytes / 2
    expected = standard.apply_rows(subject.responses, train)
    for batch in source.batches(batch_size=8, shuffle=True, seed=3, epoch=1):
        np.testing.assert_array_equal(batch.target.numpy(), expected[batch.positions])


def test_evaluation_batches_are_capped_by_host_memory_on_the_cpu_only():
    cfg = FitConfig(eval_batch_size=256)
    assert eval_batch_size(cfg, torch.device("cpu"), n_vertices=500, n_layers=4) == 256
    capped = eval_batch_size(cfg, torch.device("cpu"), n_vertices=37_984, n_layers=12)
    assert 1 <= capped < 256 and capped * 37_984 * 12 * 20 <= 256 * 2**20
    assert eval_batch_size(cfg, torch.device("cuda"), n_vertices=37_984, n_layers=12) == 256
