"""The warm start's scores from one store pass with the pooled features held, against the streamed passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.fit.layer_confidence import LayerBootstrap
from stages.fit.layer_scores import plan_passes, score_layers

CPU = torch.device("cpu")
ALPHAS = (0.1, 1.0, 10.0, 100.0)


def scores_and_bootstrap(store, subject, **options):
    """Scores, bootstrap sums and layer sets of layers 0-2, and the store blocks read meanwhile."""
    bootstrap = LayerBootstrap(len(subject.splits["train"]), 3, subject.n_vertices, n_resamples=20)
    blocks = store.reads.blocks
    scores = score_layers(store, subject, layer_indices=[0, 1, 2], grid=8, device=CPU, alphas=ALPHAS,
                          batch_size=32, bootstrap=bootstrap, **options)
    return scores, bootstrap, store.reads.blocks - blocks


@pytest.mark.store(n_images=160, channels=(6, 8, 40), chunk_images=32, smooth=True)
def test_held_features_give_the_streamed_scores_and_sets_from_one_store_pass(store, make_subject):
    """Layer 2's local set (160 features, 128 training images) takes the image-kernel form, the others GCV."""
    subject, _ = make_subject(n_vertices=9, noise=0.5, seed=3, n_val=16, n_test=16)
    streamed, streamed_boot, streamed_blocks = scores_and_bootstrap(store, subject, hold="off", budget_bytes=1)
    held, held_boot, held_blocks = scores_and_bootstrap(store, subject, hold="float32", budget_bytes=1)
    np.testing.assert_allclose(held, streamed, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(held_boot.sums.numpy(), streamed_boot.sums.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(held_boot.sets().in_set, streamed_boot.sets().in_set)
    n_chunks = 5   # every chunk holds training images
    assert held_blocks == n_chunks                      # one pass over the store, every layer at once
    assert streamed_blocks == 3 * 2 * n_chunks          # per layer (budget 1: one layer per group), twice


@pytest.mark.store(n_images=160, channels=(6, 8, 40), chunk_images=32, smooth=True)
def test_float16_held_features_change_the_scores_within_rounding(store, make_subject):
    subject, _ = make_subject(n_vertices=9, noise=0.5, seed=3, n_val=16, n_test=16)
    exact, exact_boot, _ = scores_and_bootstrap(store, subject, hold="float32")
    rounded, rounded_boot, blocks = scores_and_bootstrap(store, subject, hold="float16")
    np.testing.assert_allclose(rounded, exact, atol=2e-3)
    np.testing.assert_allclose(rounded_boot.sums.numpy(), exact_boot.sums.numpy(), rtol=5e-3)
    np.testing.assert_array_equal(rounded.argmax(axis=1), exact.argmax(axis=1))
    assert blocks == 5


def test_plan_holds_float32_then_float16_then_streams_as_the_budget_shrinks():
    sizes = [100, 300, 200]
    held = {"float32": 1000, "float16": 500}
    assert plan_passes(sizes, held, 1500) == ("float32", [[0, 1], [2]])      # 500 left for accumulators
    assert plan_passes(sizes, held, 1250) == ("float16", [[0, 1, 2]])
    assert plan_passes(sizes, held, 700) == (None, [[0, 1, 2]])
    assert plan_passes(sizes, held, 450) == (None, [[0, 1], [2]])
    assert plan_passes(sizes, held, 700, hold="float32") == ("float32", [[0], [1], [2]])
    assert plan_passes(sizes, held, 10 ** 9, hold="off") == (None, [[0, 1, 2]])


def test_host_budget_holds_subj01_pooled_features_and_cells_beside_one_layer():
    """At subj01 size (8,882 training images, 37,984 vertices, 12 x 768 channels, 8x8 grid) the warm start reads
    the store once: float16 pooled features plus projected cells, then one layer's accumulators at a time (two
    would take 0.66 GB more)."""
    from stages.fit.layer_scores import BUDGET_BYTES
    from stages.fit.layer_statistics import LayerStatistics
    from stages.fit.pooled_features import PooledFeatures, ProjectedCells

    n_train, n_vertices, sets = 8882, 37984, ("global", "local")
    widths = [{"global": 768, "local": 4 * 768}] * 12
    sizes = [sum(LayerStatistics.nbytes(width[name], n_vertices, n_train, keep_residuals=True) for name in sets)
             for width in widths]
    cells = ProjectedCells([torch.zeros(768, 32)] * 12).nbytes(n_train, 64)
    held = {name: PooledFeatures.nbytes(widths, n_train, feature_sets=sets, dtype=getattr(torch, name))
            for name in ("float32", "float16")}
    one_layer_each = [[slot] for slot in range(12)]
    assert plan_passes(sizes, {name: size + cells for name, size in held.items()}, BUDGET_BYTES) == (
        "float16", one_layer_each)
    assert plan_passes(sizes, held, BUDGET_BYTES) == ("float16", one_layer_each)   # layer-only warm start


@pytest.mark.store(n_images=160, channels=(6, 8, 40), chunk_images=32, smooth=True)
def test_features_the_fit_holds_give_the_streamed_scores_and_cells_without_reading(store, make_subject):
    from stages.fit.pooled_features import HeldTokens
    from stages.fit.streaming import ResidentFeatures
    from stages.fit.warmstart import cell_scores

    subject, truth = make_subject(n_vertices=9, noise=0.5, seed=3, n_val=16, n_test=16)
    train = subject.splits["train"]
    resident = ResidentFeatures(store, subject.stimulus_ids[train], np.zeros((len(train), 1), np.float32),
                                layer_indices=[0, 1, 2], grid=8, device=CPU)
    tokens = HeldTokens(resident.local, resident.global_)
    streamed, streamed_boot, _ = scores_and_bootstrap(store, subject, hold="off")
    held, held_boot, blocks = scores_and_bootstrap(store, subject, tokens=tokens)
    assert blocks == 0
    np.testing.assert_allclose(held, streamed, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(held_boot.sums.numpy(), streamed_boot.sums.numpy(), rtol=1e-5)
    common = dict(layer_indices=[0, 1, 2], best_layer=truth["layers"], grid=8, n_components=4, batch_size=32)
    before = store.reads.blocks
    np.testing.assert_allclose(cell_scores(store, subject, tokens=tokens, **common),
                               cell_scores(store, subject, **common), rtol=1e-5, atol=1e-6)
    assert store.reads.blocks - before == 5            # the streamed one only


@pytest.mark.gpu
@pytest.mark.store(n_images=160, channels=(6, 8, 40), chunk_images=32, smooth=True)
def test_a_resident_gpu_fit_reads_the_store_once_and_keeps_the_cpu_layer_sets(store, make_subject):
    """On CUDA every feature is read once (training, validation and test held on the device) and the warm start
    works from the device's copy; its layer sets are the CPU's."""
    import dataclasses

    from stages.fit.config import FitConfig
    from stages.fit.train import fit_factortopy

    subject, _ = make_subject(n_vertices=9, noise=0.5, seed=3, n_val=16, n_test=16)
    cfg = FitConfig(epochs=1, batch_size=16, warm_start="layer+space", layer_resamples=20, resident="on")
    fits = {device: fit_factortopy(store, subject, dataclasses.replace(cfg, device=device), checkpoint_dir=None,
                                   progress=False) for device in ("cuda", "cpu")}
    phases = fits["cuda"].metrics["phases"]
    assert phases["warm_start"]["store_gb_read"] == 0
    assert phases["train"]["store_gb_read"] == phases["validate"]["store_gb_read"] == 0
    assert "resident" in fits["cuda"].metrics["held_out_source"][0]["test"]
    columns = [f"layer_in_set_{layer:02d}" for layer in range(3)]
    sets = {device: np.stack([fit.vertices[column] for column in columns]) for device, fit in fits.items()}
    assert (sets["cuda"] == sets["cpu"]).mean() >= 0.9      # float32 on two devices: a near tie may flip


@pytest.mark.store(n_images=160, channels=(6, 8, 40), chunk_images=32, smooth=True)
def test_cells_taken_in_the_pooled_read_give_the_streamed_cell_scores_without_a_second_read(store, make_subject):
    from stages.fit.pooled_features import ProjectedCells
    from stages.fit.warmstart import cell_projections, cell_scores

    subject, truth = make_subject(n_vertices=9, noise=0.5, seed=3, n_val=16, n_test=16)
    cells = ProjectedCells(cell_projections(store, [0, 1, 2], n_components=4, seed=5))
    _, _, blocks = scores_and_bootstrap(store, subject, cells=cells)
    assert blocks == 5 and cells.values is not None
    assert [tuple(values.shape) for values in cells.values] == [(128, 64, 4)] * 3
    common = dict(layer_indices=[0, 1, 2], best_layer=truth["layers"], grid=8, n_components=4, seed=5, batch_size=32)
    before = store.reads.blocks
    held = cell_scores(store, subject, cells=cells, **common)
    assert store.reads.blocks == before
    streamed = cell_scores(store, subject, **common)
    assert store.reads.blocks - before == 5
    np.testing.assert_allclose(held, streamed, atol=2e-3)          # float16 cells
    np.testing.assert_array_equal(held.argmax(axis=1), streamed.argmax(axis=1))


@pytest.mark.store(n_images=160, channels=(6, 8, 40), chunk_images=32, smooth=True)
def test_cells_that_do_not_fit_beside_the_pooled_features_are_left_to_a_store_pass(store, make_subject):
    """128 training images: the pooled features take 138,240 bytes in float32, the cells 196,608 and the largest
    layer's accumulators 100,768; with 300,000 bytes the pooled features fit alone, not with the cells."""
    from stages.fit.pooled_features import ProjectedCells
    from stages.fit.warmstart import cell_projections

    subject, _ = make_subject(n_vertices=9, noise=0.5, seed=3, n_val=16, n_test=16)
    cells = ProjectedCells(cell_projections(store, [0, 1, 2], n_components=4, seed=5))
    _, _, blocks = scores_and_bootstrap(store, subject, cells=cells, budget_bytes=300_000)
    assert cells.values is None
    assert blocks == 5                                  # still one pass for the scores
