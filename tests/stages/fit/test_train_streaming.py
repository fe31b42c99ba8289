"""Batches from the store: every image once, the right features, seeded shuffles, bounded buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.fit import streaming
from stages.fit.streaming import ResidentFeatures, StreamedFeatures, open_features

pytestmark = pytest.mark.store(n_images=70, chunk_images=16)  # a short last chunk


def _source(store, cls, **kwargs):
    ids = store.image_ids[::-1][:50]  # a subset, in an order unlike the store's
    targets = np.arange(len(ids) * 3, dtype=np.float32).reshape(len(ids), 3)
    return cls(store, ids, targets, layer_indices=[2, 0], grid=8, device=torch.device("cpu"), **kwargs), ids, targets


def _collect(source, **kwargs):
    return list(source.batches(**kwargs))


@pytest.mark.parametrize("cls,kwargs", [(StreamedFeatures, {"shuffle_buffer": 20, "prefetch": 2}),
                                        (ResidentFeatures, {})])
def test_every_image_once_with_its_own_features(store, cls, kwargs):
    source, ids, targets = _source(store, cls, **kwargs)
    batches = _collect(source, batch_size=7, shuffle=True, seed=3, epoch=1)
    positions = np.concatenate([b.positions for b in batches])
    assert sorted(positions.tolist()) == list(range(len(ids)))
    oracle = store.read(ids)
    for batch in batches:
        assert len(batch.positions) <= 7
        np.testing.assert_array_equal(batch.local[0].numpy(), oracle.local[2][batch.positions])
        np.testing.assert_array_equal(batch.local[1].numpy(), oracle.local[0][batch.positions])
        np.testing.assert_array_equal(batch.global_[0].numpy(), oracle.global_[2][batch.positions])
        np.testing.assert_array_equal(batch.target.numpy(), targets[batch.positions])
        assert batch.local[0].dtype == torch.float32


@pytest.mark.parametrize("cls,kwargs", [(StreamedFeatures, {"shuffle_buffer": 20}), (ResidentFeatures, {})])
def test_order_depends_only_on_seed_and_epoch(store, cls, kwargs):
    source, _, _ = _source(store, cls, **kwargs)

    def order(seed, epoch):
        return np.concatenate([b.positions for b in source.batches(batch_size=8, shuffle=True, seed=seed, epoch=epoch)])

    np.testing.assert_array_equal(order(0, 1), order(0, 1))
    assert not np.array_equal(order(0, 1), order(0, 2))
    assert not np.array_equal(order(0, 1), order(1, 1))
    unshuffled = np.concatenate([b.positions for b in source.batches(batch_size=8, shuffle=False)])
    assert sorted(unshuffled.tolist()) == list(range(50))


def test_shuffle_mixes_across_chunks(store):
    source, _, _ = _source(store, StreamedFeatures, shuffle_buffer=40)
    first = next(iter(source.batches(batch_size=16, shuffle=True, seed=0, epoch=0)))
    chunks = set((source.rows[first.positions] // store.chunk_images).tolist())
    assert len(chunks) >= 2


def test_buffer_bounds_rows_held(store, monkeypatch):
    held = []
    original = streaming._ShuffleBuffer.add

    def spy(buffer, part):
        original(buffer, part)
        held.append(sum(len(p) for p in buffer.parts))

    monkeypatch.setattr(streaming._ShuffleBuffer, "add", spy)
    source, _, _ = _source(store, StreamedFeatures, shuffle_buffer=20)
    _collect(source, batch_size=4, shuffle=True)
    assert held and max(held) <= 20 + store.chunk_images


def test_shuffle_buffer_serves_what_a_concatenation_of_its_parts_would():
    """Rows are gathered from the parts, never concatenated; batches and kept rows are those of the concatenation."""
    rng = np.random.default_rng(0)

    def part(n, start):
        return streaming._HostBatch(np.arange(start, start + n), [rng.normal(size=(n, 3, 2, 2)).astype(np.float16)],
                                    [rng.normal(size=(n, 3)).astype(np.float16)])

    def same(batch, reference):
        for got, wanted in zip([batch.positions, *batch.local, *batch.global_],
                               [reference.positions, *reference.local, *reference.global_]):
            np.testing.assert_array_equal(got, wanted)
            assert got.dtype == wanted.dtype

    parts = [part(5, 0), part(7, 5), part(4, 12)]
    buffer = streaming._ShuffleBuffer()
    for item in parts:
        buffer.add(item)
    joined = streaming._HostBatch(np.concatenate([p.positions for p in parts]),
                                  [np.concatenate([p.local[0] for p in parts])],
                                  [np.concatenate([p.global_[0] for p in parts])])
    permutation = rng.permutation(len(joined))
    same(buffer.take(permutation[:6]), joined.take(permutation[:6]))
    buffer.keep(permutation[6:])
    rest = joined.take(permutation[6:])
    assert len(buffer) == len(rest) and sum(len(p) for p in buffer.parts) == len(rest)
    buffer.add(later := part(3, 16))
    rest = streaming._HostBatch(np.concatenate([rest.positions, later.positions]),
                                [np.concatenate([rest.local[0], later.local[0]])],
                                [np.concatenate([rest.global_[0], later.global_[0]])])
    again = rng.permutation(len(rest))
    same(buffer.take(again), rest.take(again))


def test_prefetched_batches_stay_in_the_store_dtype_until_used(store):
    source, ids, _ = _source(store, StreamedFeatures, shuffle_buffer=20)
    host = next(source._host_batches(batch_size=4, shuffle=False, rng=np.random.default_rng(0)))
    host = streaming._HostBatch(host.positions, [a.astype(np.float16) for a in host.local],
                                [a.astype(np.float16) for a in host.global_])
    prepared = source._to_tensors(host)
    assert {t.dtype for t in prepared[1] + prepared[2]} == {torch.float16}
    batch = source._to_device(prepared)
    assert {t.dtype for t in batch.local + batch.global_} == {torch.float32}
    np.testing.assert_array_equal(batch.local[0].numpy(), host.local[0].astype(np.float32))


def test_reader_error_reaches_consumer(store, monkeypatch):
    source, _, _ = _source(store, StreamedFeatures)

    def broken(positions):
        raise OSError("disk gone")

    monkeypatch.setattr(source, "_read", broken)
    with pytest.raises(OSError, match="disk gone"):
        _collect(source, batch_size=4, shuffle=False)


def test_open_features_chooses_by_size(store, monkeypatch):
    ids, targets = store.image_ids[:10], np.zeros((10, 2), np.float32)
    common = dict(layer_indices=[0, 1, 2], grid=8, device=torch.device("cpu"))
    assert isinstance(open_features(store, ids, targets, resident="on", **common), ResidentFeatures)
    assert isinstance(open_features(store, ids, targets, resident="off", **common), StreamedFeatures)
    assert isinstance(open_features(store, ids, targets, resident="auto", **common), ResidentFeatures)
    monkeypatch.setattr(streaming, "resident_fits", lambda n_bytes, device: False)
    assert isinstance(open_features(store, ids, targets, resident="auto", **common), StreamedFeatures)


def test_feature_bytes_counts_local_and_global(store):
    expected = 10 * (4 + 8) * (64 + 1) * 4  # float32 store, layers 0 and 2
    assert streaming.feature_bytes(store, 10, layer_indices=[0, 2], grid=8) == expected


@pytest.mark.slow
def test_streaming_host_memory_stays_bounded(make_store):
    """Host memory does not grow with the number of streamed images.

    Streaming a 4,000-image store (~270 MB of float32 features) with a 256-image shuffle
    buffer allocates at most a quarter of the features' size at any moment. Allocations are
    traced (numpy arrays, decoded chunks) rather than read from the resident set, which
    other processes' load and the allocator's retained arenas would blur.
    """
    import tracemalloc

    def stream(store):
        targets = np.zeros((store.n_images, 8), np.float32)
        source = StreamedFeatures(store, store.image_ids, targets, layer_indices=[0], grid=8,
                                  device=torch.device("cpu"), shuffle_buffer=256, prefetch=2)
        return sum(len(b.positions) for b in source.batches(batch_size=32, shuffle=True))

    large = make_store(n_images=4000, channels=(256,), chunk_images=100)
    total = streaming.feature_bytes(large, large.n_images, layer_indices=[0], grid=8)
    tracemalloc.start()
    try:
        seen = stream(large)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"streamed {seen} images ({total / 2**20:.0f} MB of features): peak traced allocation {peak / 2**20:.0f} MB")
    assert seen == large.n_images
    assert peak < 0.25 * total


def test_held_splits_are_read_in_one_pass_and_serve_what_streaming_serves(store):
    """Two interleaved held-out splits spread over every chunk: held, one read of each chunk serves both, and every
    later evaluation reads nothing; the batches equal the streamed sources' (the oracle)."""
    ids = {"val": store.image_ids[0::5], "test": store.image_ids[2::5]}
    splits = {name: (these, np.arange(len(these) * 2, dtype=np.float32).reshape(-1, 2)) for name, these in ids.items()}
    common = dict(layer_indices=[1, 0], grid=8, device=torch.device("cpu"), scales=[(2.0, 0.5), (1.0, 4.0)])
    blocks = store.reads.blocks
    held = streaming.open_splits(store, splits, hold=["val", "test"], resident="on", **common)
    assert store.reads.blocks - blocks == store.n_chunks and "one pass" in held["val"].choice
    streamed = streaming.open_splits(store, splits, hold=["val", "test"], resident="off", **common)
    assert "streamed" in streamed["test"].choice
    only_val = streaming.open_splits(store, splits, hold=["val"], resident="on", **common)
    assert isinstance(only_val["val"], ResidentFeatures) and isinstance(only_val["test"], StreamedFeatures)
    blocks = store.reads.blocks
    for name in ids:
        assert held[name].n_images == len(ids[name])
        for ours, oracle in zip(held[name].batches(batch_size=6, shuffle=False),
                                streamed[name].batches(batch_size=6, shuffle=False)):
            np.testing.assert_array_equal(ours.positions, oracle.positions)
            for a, b in zip(ours.local + ours.global_ + [ours.target], oracle.local + oracle.global_ + [oracle.target]):
                np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(held[name].targets, splits[name][1])
    assert store.reads.blocks - blocks == 2 * store.n_chunks    # only the streamed sources read


def test_held_splits_stack_lazily_z_scored_rows_a_block_at_a_time(store, monkeypatch):
    from stages.fit.targets import StandardisedRows, standardise

    rng = np.random.default_rng(0)
    responses = rng.standard_normal((store.n_images, 3)).astype(np.float32) * 5 + 2
    train, val = np.arange(0, 50), np.arange(50, 60)
    standard = standardise(responses, train)
    monkeypatch.setattr(streaming, "STACK_ROWS", 7)
    splits = {"train": (store.image_ids[train], StandardisedRows(responses, train, standard)),
              "val": (store.image_ids[val], standard.apply_rows(responses, val))}
    sources = streaming.open_splits(store, splits, hold=["train", "val"], resident="on", layer_indices=[0], grid=8,
                                    device=torch.device("cpu"))
    np.testing.assert_allclose(sources["train"].targets, np.asarray(splits["train"][1]), rtol=1e-6)
    np.testing.assert_array_equal(sources["val"].targets, splits["val"][1])
    assert "train + val read in one pass" in sources["train"].choice


@pytest.mark.store(n_images=70, chunk_images=16, channels=(4, 6))
def test_a_streamed_fit_holds_its_validation_features_and_streams_the_test_split_once(store, make_subject):
    from stages.fit.config import FitConfig
    from stages.fit.train import fit_factortopy

    subject, _ = make_subject(n_vertices=4, n_val=12, n_test=12)
    cfg = FitConfig(epochs=2, batch_size=16, warm_start="none", device="cpu", resident="off")
    fit = fit_factortopy(store, subject, cfg, checkpoint_dir=None, progress=False)
    sources = fit.metrics["held_out_source"][0]
    assert sources["val"].startswith("resident") and sources["test"].startswith("streamed")
    assert fit.metrics["feature_source"][0].startswith("streamed")
    assert fit.metrics["phases"]["validate"]["store_gb_read"] == 0
