"""Feature store creation, provenance checks, kill-safe writes and resume (cache.store)."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from builders import random_features, write_features
from cache.errors import IncompleteStoreError, InvalidInputError, MissingInputError, StoreMismatchError
from cache.provenance import hash_strings
from cache.schema import TARGET_CHUNK_BYTES, choose_chunk_images
from cache.store import FeatureStore, StoreLayout

LAYOUT = StoreLayout(layer_names=("stem", "blocks.1", "head"), n_channels=(3, 5, 2), grids=(4, 2), chunk_images=4)
IDS = [f"demo-{index:05d}" for index in range(10)]
PROVENANCE = {"model": {"model_id": "timm:test", "weights": "sha256-aaa"}, "preprocessing": {"size": [32, 32]},
              "environment": {"created_utc": "2026-01-01T00:00:00+00:00", "packages": {"zarr": "3.1.6"}}}


def create_store(tmp_path, **overrides) -> FeatureStore:
    """``FeatureStore.create`` of the test's request at ``tmp_path/store.zarr``, with ``overrides``."""
    arguments = {"image_ids": IDS, "layout": LAYOUT, "provenance": PROVENANCE} | overrides
    return FeatureStore.create(tmp_path / "store.zarr", **arguments)


def test_round_trip_equals_inputs_cast_to_float16(tmp_path):
    store = create_store(tmp_path)
    assert store.pending_chunks() == [0, 1, 2] and not store.is_complete()
    local, global_ = random_features(LAYOUT, len(IDS), dtype=np.float32)
    write_features(store, local, global_)
    reopened = FeatureStore.open(store.path)
    assert reopened.is_complete()
    assert reopened.image_ids.tolist() == IDS
    assert (reopened.n_images, reopened.n_layers, reopened.n_chunks, reopened.chunk_images) == (10, 3, 3, 4)
    assert reopened.layer_names == LAYOUT.layer_names and reopened.n_channels == (3, 5, 2)
    for grid in LAYOUT.grids:
        batch = reopened.read(IDS, grid=grid)
        for layer in range(3):
            assert batch.local[layer].dtype == np.float16
            np.testing.assert_array_equal(batch.local[layer], local[grid][layer].astype(np.float16))
            np.testing.assert_array_equal(batch.global_[layer], global_[layer].astype(np.float16))
    assert reopened.chunk_rows(2) == slice(8, 10)  # the last block is shorter


def test_float32_layout_keeps_full_precision(tmp_path):
    layout = StoreLayout(layer_names=("a",), n_channels=(4,), grids=(2,), dtype="float32")
    store = create_store(tmp_path, layout=layout)
    local, global_ = random_features(layout, len(IDS), dtype=np.float32)
    write_features(store, local, global_)
    np.testing.assert_array_equal(store.read(IDS).local[0], local[2][0])


def test_xarray_opens_store_with_labelled_dims(tmp_path):
    import xarray  # a test dependency (pyproject [test])
    store = create_store(tmp_path)
    local, global_ = random_features(LAYOUT, len(IDS), dtype=np.float32)
    write_features(store, local, global_)
    dataset = xarray.open_zarr(store.path, consolidated=False)
    assert dataset["local_4x4_layer_01"].dims == ("image", "channel_01", "grid4_y", "grid4_x")
    assert dataset["local_2x2_layer_02"].dims == ("image", "channel_02", "grid2_y", "grid2_x")
    assert dataset["global_layer_00"].dims == ("image", "channel_00")
    assert dataset.sizes["channel_01"] == 5 and dataset.sizes["channel_02"] == 2
    assert dataset["image_id"].values.tolist() == IDS
    assert dataset["local_4x4_layer_01"].attrs["layer_name"] == "blocks.1"
    np.testing.assert_array_equal(dataset["global_layer_01"].values, global_[1].astype(np.float16))


def test_provenance_records_caller_dict_layout_and_id_hash(tmp_path):
    store = create_store(tmp_path)
    assert store.provenance == json.loads(json.dumps(PROVENANCE))
    attrs = zarr.open_group(store.path, mode="r").attrs.asdict()
    record = attrs["bddn_feature_store"]
    assert record["image_ids_sha256"] == hash_strings(IDS)
    assert record["layout"]["grids"] == [4, 2] and record["layout"]["dtype"] == "float16"
    assert record["format_version"] == 1


def test_same_request_reopens_and_keeps_finished_chunks(tmp_path):
    store = create_store(tmp_path)
    local, global_ = random_features(LAYOUT, len(IDS), dtype=np.float32)
    write_features(store, local, global_, chunks=[0])
    changed_environment = PROVENANCE | {"environment": {"created_utc": "later"}, "run": {"batch_size": 99}}
    resumed = create_store(tmp_path, provenance=changed_environment)
    assert resumed.pending_chunks() == [1, 2]
    assert resumed.provenance["environment"] == PROVENANCE["environment"]  # the original record stays


def test_different_request_names_each_differing_key(tmp_path):
    create_store(tmp_path)
    other = PROVENANCE | {"model": {"model_id": "timm:test", "weights": "sha256-bbb"}}
    with pytest.raises(StoreMismatchError) as caught:
        create_store(tmp_path, provenance=other, layout=StoreLayout(
            layer_names=LAYOUT.layer_names, n_channels=LAYOUT.n_channels, grids=(8,), chunk_images=4))
    message = str(caught.value)
    assert 'provenance.model.weights: stored "sha256-aaa", requested "sha256-bbb"' in message
    assert "layout.grids: stored [4, 2], requested [8]" in message
    assert "overwrite" in message and "model_id" not in message


def test_different_image_ids_mismatch_lists_them(tmp_path):
    create_store(tmp_path)
    with pytest.raises(StoreMismatchError, match=r"image_ids_sha256.*1 requested not stored.*nsd-00001"):
        create_store(tmp_path, image_ids=IDS[:-1] + ["nsd-00001"])


def test_overwrite_deletes_and_rebuilds(tmp_path):
    store = create_store(tmp_path)
    local, global_ = random_features(LAYOUT, len(IDS), dtype=np.float32)
    write_features(store, local, global_)
    other = PROVENANCE | {"model": {"model_id": "timm:other", "weights": "x"}}
    rebuilt = create_store(tmp_path, provenance=other, image_ids=IDS[:6], overwrite=True)
    assert rebuilt.provenance["model"]["model_id"] == "timm:other"
    assert rebuilt.image_ids.tolist() == IDS[:6] and rebuilt.pending_chunks() == [0, 1]
    assert [entry.name for entry in tmp_path.iterdir()] == ["store.zarr"]
    raw = zarr.open_group(rebuilt.path, mode="r")["global_layer_00"][:]
    assert np.isnan(raw).all()  # no old data survives


def test_overwrite_interrupted_while_deleting_never_leaves_a_usable_store(tmp_path, monkeypatch):
    store = create_store(tmp_path)
    write_features(store, *random_features(LAYOUT, len(IDS), dtype=np.float32))

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt("killed during deletion")

    monkeypatch.setattr("cache.folder.shutil.rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        create_store(tmp_path, overwrite=True)
    with pytest.raises(MissingInputError, match="no feature store"):
        FeatureStore.open(store.path)
    monkeypatch.undo()
    assert create_store(tmp_path).pending_chunks() == [0, 1, 2]


def test_resume_redoes_a_chunk_whose_record_is_missing(tmp_path):
    store = create_store(tmp_path)
    local, global_ = random_features(LAYOUT, len(IDS), dtype=np.float32)
    write_features(store, local, global_, chunks=[0, 2])
    # a writer killed after chunk 1's data but before its completion record:
    group = zarr.open_group(store.path, mode="r+")
    group["global_layer_00"][4:8] = 123.0
    resumed = create_store(tmp_path)
    assert resumed.pending_chunks() == [1] and not resumed.is_complete()
    with pytest.raises(IncompleteStoreError, match=r"chunks \[1\]"):
        resumed.read(IDS[5:6])
    np.testing.assert_array_equal(resumed.read(IDS[8:]).global_[0], global_[0][8:].astype(np.float16))
    write_features(resumed, local, global_)
    assert resumed.is_complete()
    np.testing.assert_array_equal(resumed.read(IDS).global_[0], global_[0].astype(np.float16))


def test_interrupted_creation_is_rebuilt_not_opened(tmp_path):
    path = tmp_path / "store.zarr"
    zarr.open_group(path, mode="w", attributes={"bddn_feature_store": {"state": "initialising"}})
    with pytest.raises(MissingInputError, match="never fully created"):
        FeatureStore.open(path)
    assert create_store(tmp_path).pending_chunks() == [0, 1, 2]


def test_blocks_share_no_zarr_chunk_and_write_concurrently(tmp_path):
    store = create_store(tmp_path)
    group = zarr.open_group(store.path, mode="r")
    for name, array in group.arrays():
        expected = (1, *array.shape[1:]) if name in ("chunk_done", "chunk_bytes") else \
            (store.chunk_images, *array.shape[1:])
        assert array.chunks == expected, name
    local, global_ = random_features(LAYOUT, len(IDS), dtype=np.float32)
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda chunk: write_features(pickle.loads(pickle.dumps(store)), local, global_, [chunk]), [2, 0, 1]))
    assert store.is_complete()
    np.testing.assert_array_equal(store.read(IDS).local[1], local[4][1].astype(np.float16))


def test_default_chunk_images_targets_largest_array_chunk():
    layout = StoreLayout(layer_names=tuple("abc"), n_channels=(384, 768, 96), grids=(8, 4))
    bytes_per_image = 768 * 8 * 8 * 2
    assert choose_chunk_images(layout, 10_000) == TARGET_CHUNK_BYTES // bytes_per_image == 85
    assert 5 * 2**20 <= 85 * bytes_per_image <= 20 * 2**20
    assert choose_chunk_images(layout, 30) == 30
    huge = StoreLayout(layer_names=("a",), n_channels=(200_000,), grids=(16,), dtype="float32")
    assert choose_chunk_images(huge, 100) == 1
    assert choose_chunk_images(StoreLayout(layer_names=("a",), n_channels=(3,), chunk_images=7), 5) == 5


def test_pickled_store_reopens_by_path(tmp_path):
    store = create_store(tmp_path)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.path == store.path and clone.image_ids.tolist() == IDS


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"layer_names": (), "n_channels": ()}, "at least one layer"),
    ({"layer_names": ("a", "a"), "n_channels": (1, 1)}, "unique"),
    ({"layer_names": ("a", "b"), "n_channels": (1,)}, "one channel width per layer"),
    ({"layer_names": ("a",), "n_channels": (0,)}, "positive integers"),
    ({"layer_names": ("a",), "n_channels": (1,), "grids": (8, 8)}, "distinct"),
    ({"layer_names": ("a",), "n_channels": (1,), "dtype": "int8"}, "not supported"),
    ({"layer_names": ("a",), "n_channels": (1,), "chunk_images": 0}, "chunk_images"),
])
def test_bad_layout_is_refused(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        StoreLayout(**kwargs)


@pytest.mark.parametrize("ids, match", [([], "at least one"), (["a", "b", "a"], "unique.*'a'"), (["a", ""], "non-empty")])
def test_bad_image_ids_are_refused(tmp_path, ids, match):
    with pytest.raises(InvalidInputError, match=match):
        create_store(tmp_path, image_ids=ids)


def test_provenance_must_be_json(tmp_path):
    with pytest.raises(InvalidInputError, match="plain JSON"):
        create_store(tmp_path, provenance={"model": object()})


def test_open_missing_path_and_non_store(tmp_path):
    with pytest.raises(MissingInputError, match="no feature store at"):
        FeatureStore.open(tmp_path / "absent.zarr")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("x")
    with pytest.raises(MissingInputError, match="is not a feature store"):
        FeatureStore.open(tmp_path / "folder")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(MissingInputError, match="is not a feature store"):
        FeatureStore.open(tmp_path / "plain.zarr")


def test_create_never_deletes_a_folder_that_is_not_a_store(tmp_path):
    folder = tmp_path / "store.zarr"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep")
    with pytest.raises(InvalidInputError, match="not a feature store"):
        create_store(tmp_path, overwrite=True)
    assert (folder / "precious.txt").read_text() == "keep"


def test_unknown_format_version_is_refused(tmp_path):
    store = create_store(tmp_path)
    group = zarr.open_group(store.path, mode="r+")
    group.attrs["bddn_feature_store"] = group.attrs["bddn_feature_store"] | {"format_version": 99}
    with pytest.raises(InvalidInputError, match="format version 99"):
        FeatureStore.open(store.path)


def test_bad_writes_are_refused_and_leave_chunk_pending(tmp_path):
    store = create_store(tmp_path)
    local, global_ = random_features(LAYOUT, 4, dtype=np.float32)
    with pytest.raises(InvalidInputError, match=r"shape \(4, 5, 4, 4\)"):
        store.write_chunk(0, local={4: [local[4][0], local[4][0], local[4][2]], 2: local[2]}, global_=global_)
    with pytest.raises(InvalidInputError, match="grids"):
        store.write_chunk(0, local={4: local[4]}, global_=global_)
    with pytest.raises(InvalidInputError, match="one array per layer"):
        store.write_chunk(0, local=local, global_=global_[:2])
    with pytest.raises(InvalidInputError, match="out of range"):
        store.write_chunk(3, local=local, global_=global_)
    too_big = [values * 1e6 for values in global_]
    with pytest.raises(InvalidInputError, match="beyond what float16 holds.*--dtype float32"):
        store.write_chunk(0, local=local, global_=too_big)
    broken = {grid: [values.copy() for values in per_layer] for grid, per_layer in local.items()}
    broken[2][1][0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="'blocks.1' has 1 inf/nan values in the model output"):
        store.write_chunk(0, local=broken, global_=global_)
    assert store.pending_chunks() == [0, 1, 2]
