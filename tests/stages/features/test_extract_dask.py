"""Scale-out: a 2-worker dask LocalCluster fills the same store as one process, each worker loading the model once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from cache.errors import InvalidInputError
from cache.store import FeatureStore
from forkserver import dask_workers_from_forkserver
from pipeline.imagesets.demo import write_demo_images
from pipeline.imagesets.folder import image_source_from_folder
from stages.features.extract import ExtractConfig, extract_features, store_layout, store_provenance
from stages.features.image_source import ImageSource
from stages.models.registry import ModelRequest
from stages.features.scaleout import extract_features_distributed, load_requested_model

REQUEST = ModelRequest("timm:test_vit", pretrained=False, seed=1)


@pytest.fixture(autouse=True)
def _workers_from_forkserver(isolated_environment: None) -> Iterator[None]:
    """Local dask clusters fork their worker processes from the tests' forkserver (tests/forkserver.py), which
    imported torch, timm and the commands once, instead of spawning interpreters that import them (~5 s each)."""
    with dask_workers_from_forkserver():
        yield


class FailingLoader:
    """Picklable loader that refuses one image, as a file damaged after validation would."""

    def __init__(self, inner: object, broken: int) -> None:
        self.inner, self.broken = inner, broken

    def __call__(self, index: int) -> object:
        if index == self.broken:
            raise InvalidInputError(f"image {index}: truncated or corrupt image")
        return self.inner(index)


def _create(path: Path, images: ImageSource, cfg: ExtractConfig) -> FeatureStore:
    model = load_requested_model(REQUEST)
    return FeatureStore.create(path, image_ids=images.image_ids, layout=store_layout(model, cfg),
                               provenance=store_provenance(model, images, cfg, seed=REQUEST.seed))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    return {name: np.asarray(group[name][:]) for name in sorted(group.array_keys())}


@pytest.mark.slow
def test_two_workers_give_the_one_process_store(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    images = image_source_from_folder(write_demo_images(tmp_path / "images", count=20, size=40).folder)
    cfg = ExtractConfig(chunk_images=4, batch_size=3, grids=(8, 4), decode_workers=1)
    single = _create(tmp_path / "single.zarr", images, cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # dask worker processes run torch with one thread each
    try:
        extract_features(load_requested_model(REQUEST), images, single, cfg, progress=False)
    finally:
        torch.set_num_threads(threads)

    spread = _create(tmp_path / "spread.zarr", images, cfg)
    broken = ImageSource(image_ids=images.image_ids, load=FailingLoader(images.load, 6), decoding=images.decoding)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with pytest.raises(InvalidInputError, match="image 6"):
            extract_features_distributed(REQUEST, broken, spread, cfg, client=client, progress=False)
        assert spread.pending_chunks() == [1]
        report = extract_features_distributed(REQUEST, images, spread, cfg, client=client, progress=False)
        loads = client.run(lambda: load_requested_model.cache_info().misses)
    assert report.n_chunks == 1 and report.n_images == 4
    assert sorted(loads.values()) in ([1, 1], [0, 1])  # at most one model load per worker process
    assert FeatureStore.open(spread.path).is_complete()
    expected, got = _arrays(single.path), _arrays(spread.path)
    assert sorted(expected) == sorted(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_other_thread_counts_agree_within_two_float16_ulps(tmp_path: Path) -> None:
    """What the module docs promise for a dask worker (one thread) against a process using every core: the
    same batches, values equal up to 2 units in the last place of the float16 store."""
    images = image_source_from_folder(write_demo_images(tmp_path / "images", count=8, size=40).folder)
    cfg = ExtractConfig(chunk_images=4, batch_size=4, grids=(8,), decode_workers=1)
    threads = torch.get_num_threads()
    stores = {}
    for count in (1, max(2, threads)):
        torch.set_num_threads(count)
        try:
            stores[count] = _create(tmp_path / f"threads{count}.zarr", images, cfg)
            extract_features(load_requested_model(REQUEST), images, stores[count], cfg, progress=False)
        finally:
            torch.set_num_threads(threads)
    one, many = (_arrays(store.path) for store in stores.values())
    for name in one:
        if name in ("chunk_done", "image_id"):
            continue
        a, b = one[name].astype(np.float32), many[name].astype(np.float32)
        ulp = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float16)).astype(np.float32)
        assert np.all(np.abs(a - b) <= 2 * ulp), name
