"""Reading a feature store: rows_for, read, chunk-aware iter_batches (cache.store, cache.batches)."""

from __future__ import annotations

import numpy as np
import pytest

from builders import random_features, write_features
from cache.batches import BlockReader, plan_blocks
from cache.errors import IncompleteStoreError, InvalidInputError
from cache.store import FeatureStore, StoreLayout

LAYOUT = StoreLayout(layer_names=("a", "b"), n_channels=(3, 6), grids=(8, 2), chunk_images=5)
IDS = [f"nsd-{index:05d}" for index in range(23)]  # 5 blocks, the last holding 3 rows


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A complete store and the float16 arrays it should return, per grid."""
    store = FeatureStore.create(tmp_path_factory.mktemp("read") / "s.zarr", image_ids=IDS, layout=LAYOUT,
                                provenance={"model": "m"})
    local, global_ = random_features(LAYOUT, len(IDS), seed=7)
    write_features(store, local, global_)
    expect = {grid: [v.astype(np.float16) for v in per] for grid, per in local.items()}
    return store, expect, [v.astype(np.float16) for v in global_]


def check_rows(batch, requested, expect, global_, grid):
    """Each batch row holds the features of requested[position] (oracle: the written arrays)."""
    store_rows = np.array([IDS.index(requested[p]) for p in batch.positions])
    assert batch.image_ids.tolist() == [requested[p] for p in batch.positions]
    for layer in range(len(LAYOUT.layer_names)):
        np.testing.assert_array_equal(batch.local[layer], expect[grid][layer][store_rows])
        np.testing.assert_array_equal(batch.global_[layer], global_[layer][store_rows])


def test_rows_for_maps_ids_to_rows(filled):
    store, _, _ = filled
    np.testing.assert_array_equal(store.rows_for(["nsd-00022", "nsd-00000", "nsd-00022"]), [22, 0, 22])
    assert store.rows_for(["nsd-00003"]).dtype == np.int64


def test_read_returns_request_order_at_default_grid(filled):
    store, expect, global_ = filled
    requested = ["nsd-00017", "nsd-00002", "nsd-00011", "nsd-00002"]
    batch = store.read(requested)
    assert batch.local[0].shape == (4, 3, 8, 8)  # grid 8 is the default when stored
    np.testing.assert_array_equal(batch.positions, np.arange(4))
    check_rows(batch, requested, expect, global_, 8)
    check_rows(store.read(requested, grid=2), requested, expect, global_, 2)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 4, 7, 100])
def test_iter_batches_covers_each_request_once(filled, shuffle, batch_size):
    store, expect, global_ = filled
    rng = np.random.default_rng(batch_size)
    requested = [IDS[row] for row in rng.choice(len(IDS), size=17, replace=False)]
    batches = list(store.iter_batches(requested, batch_size=batch_size, shuffle=shuffle, seed=3, grid=2))
    positions = np.concatenate([batch.positions for batch in batches])
    assert sorted(positions.tolist()) == list(range(17))
    assert [len(batch) for batch in batches[:-1]] == [batch_size] * (len(batches) - 1)
    for batch in batches:
        check_rows(batch, requested, expect, global_, 2)


def test_drop_last_drops_only_the_short_tail(filled):
    store, _, _ = filled
    sizes = [len(batch) for batch in store.iter_batches(IDS, batch_size=6, drop_last=True)]
    assert sizes == [6, 6, 6]
    assert [len(batch) for batch in store.iter_batches(IDS, batch_size=6)] == [6, 6, 6, 5]


def test_unshuffled_order_follows_rows(filled):
    store, _, _ = filled
    requested = IDS[::-1]
    order = np.concatenate([batch.positions for batch in store.iter_batches(requested, batch_size=4)])
    np.testing.assert_array_equal(store.rows_for(requested)[order], np.arange(len(IDS)))


def test_shuffle_is_seeded_chunk_level_and_changes_order(filled):
    store, _, _ = filled

    def order(seed):
        return np.concatenate([b.positions for b in store.iter_batches(IDS, batch_size=4, shuffle=True, seed=seed)])

    first = order(0)
    np.testing.assert_array_equal(first, order(0))
    assert not np.array_equal(first, order(1))
    assert not np.array_equal(first, np.arange(len(IDS)))
    blocks = first // store.chunk_images  # positions equal rows here: each block is served contiguously
    assert len([b for i, b in enumerate(blocks) if i == 0 or b != blocks[i - 1]]) == store.n_chunks
    assert not np.array_equal(np.unique(blocks, return_index=True)[1], np.arange(0, 23, 5))
    within = [first[blocks == block] for block in range(store.n_chunks)]
    assert any(not np.array_equal(rows, np.sort(rows)) for rows in within)


def test_plan_blocks_reads_each_block_once():
    rows = np.array([12, 0, 3, 14, 7, 0])
    groups = plan_blocks(rows, 5)
    assert [rows[group].tolist() for group in groups] == [[0, 0, 3], [7], [12, 14]]
    assert groups[0].tolist() == [1, 5, 2]  # ties keep request order
    shuffled = plan_blocks(rows, 5, shuffle=True, seed=0)
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(6))
    assert all(len(set((rows[group] // 5).tolist())) == 1 for group in shuffled)
    assert plan_blocks(np.array([], dtype=np.int64), 5) == []


def test_empty_request_gives_no_batches(filled):
    store, _, _ = filled
    assert list(store.iter_batches([], batch_size=3)) == []
    assert len(store.read([])) == 0


def test_missing_ids_error_names_them_and_counts(filled):
    store, _, _ = filled
    with pytest.raises(IncompleteStoreError, match=r"2 of 3 requested image ids are not in .*'demo-00001', 'x'"):
        store.rows_for(["nsd-00001", "demo-00001", "x"])
    with pytest.raises(IncompleteStoreError):
        next(store.iter_batches(["nope"], batch_size=2))


def test_pending_chunks_refuse_reads(tmp_path):
    store = FeatureStore.create(tmp_path / "p.zarr", image_ids=IDS, layout=LAYOUT, provenance={})
    write_features(store, *random_features(LAYOUT, len(IDS)), chunks=[1])
    assert len(store.read(IDS[5:10])) == 5
    with pytest.raises(IncompleteStoreError, match=r"3 chunk\(s\).*\[0, 2, 4\].*resume"):
        store.read(IDS[:3] + IDS[5:7] + IDS[12:13] + IDS[22:])
    with pytest.raises(IncompleteStoreError):
        store.iter_batches(IDS, batch_size=4)


def test_bad_read_arguments(filled):
    store, _, _ = filled
    with pytest.raises(InvalidInputError, match=r"grids \[8, 2\], not 4"):
        store.read(IDS[:2], grid=4)
    with pytest.raises(InvalidInputError, match="batch_size"):
        store.iter_batches(IDS, batch_size=0)


def test_default_grid_is_finest_without_8(tmp_path):
    layout = StoreLayout(layer_names=("a",), n_channels=(2,), grids=(2, 4), chunk_images=3)
    store = FeatureStore.create(tmp_path / "g.zarr", image_ids=IDS[:3], layout=layout, provenance={})
    store.write_chunk(0, local={2: [np.ones((3, 2, 2, 2))], 4: [np.ones((3, 2, 4, 4))]}, global_=[np.ones((3, 2))])
    assert store.read(IDS[:3]).local[0].shape == (3, 2, 4, 4)


def test_layer_subset_reads_only_those_layers_in_order(filled):
    store, expect, global_ = filled
    batch = store.read(IDS[3:9], grid=2, layers=[1, 0])
    np.testing.assert_array_equal(batch.local[0], expect[2][1][3:9])
    np.testing.assert_array_equal(batch.global_[1], global_[0][3:9])
    assert len(batch.local) == len(batch.global_) == 2
    streamed = list(store.iter_batches(IDS, batch_size=10, layers=[1]))
    np.testing.assert_array_equal(np.concatenate([b.local[0] for b in streamed]), expect[8][1])
    with pytest.raises(InvalidInputError, match=r"layer indices 0..1"):
        store.read(IDS[:2], layers=[2])
    with pytest.raises(InvalidInputError, match="non-empty"):
        store.read(IDS[:2], layers=[])


def test_chunks_finished_by_another_writer_become_readable(tmp_path):
    store = FeatureStore.create(tmp_path / "w.zarr", image_ids=IDS, layout=LAYOUT, provenance={})
    reader = FeatureStore.open(store.path)
    assert reader.pending_chunks() == [0, 1, 2, 3, 4]
    rows = store.chunk_rows(4)
    store.write_chunk(4, local={g: [np.ones((3, w, g, g)) for w in LAYOUT.n_channels] for g in LAYOUT.grids},
                      global_=[np.ones((3, w)) for w in LAYOUT.n_channels])
    assert reader.pending_chunks() == [0, 1, 2, 3]
    assert reader.read(IDS[rows]).global_[0].sum() == 3 * 3


def test_each_needed_chunk_is_read_once_and_only_those(filled, monkeypatch):
    store, _, _ = filled
    reads: list[tuple[int, int]] = []
    original = BlockReader.read_block

    def counting(self, positions, rows, store_ids, pool):
        block = original(self, positions, rows, store_ids, pool)
        reads.append((int(rows[positions].min()) // store.chunk_images, len(block.local[0])))
        return block

    monkeypatch.setattr(BlockReader, "read_block", counting)
    requested = IDS[1:4] + IDS[16:19] + IDS[2:3]  # blocks 0 and 3
    assert sum(len(b) for b in store.iter_batches(requested, batch_size=2, shuffle=True)) == 7
    assert sorted(block for block, _ in reads) == [0, 3]
    assert all(n_rows <= store.chunk_images for _, n_rows in reads)
