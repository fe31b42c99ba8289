"""Stage one in one process: store contents against a direct computation, chunk/batch plan, failures, config."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from PIL import Image

from cache.errors import ConfigError, InvalidInputError, StoreMismatchError
from cache.store import FeatureStore
from stages.features.extract import (
    ExtractConfig, extract_features, resolve_extract_precision, store_layout, store_provenance, tune_allocator,
)
from stages.features.image_source import ImageSource
from stages.models.base import FeatureModel, LayerTokens, ModelInfo, Preprocessing
from stages.models.preprocess import image_to_tensor


class TinyModel(FeatureModel):
    """Two conv blocks (16x16 and 4x4 grids) with spatial-mean global tokens; records batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.second = torch.nn.Conv2d(5, 7, 4, stride=4)
        self.info = ModelInfo(model_id="tiny", source="test", weights="random-init", layer_names=("a", "b"),
                              n_channels=(5, 7), preprocessing=Preprocessing(size=(32, 32), mean=(0.5,) * 3,
                                                                              std=(0.25,) * 3, interpolation="bilinear"))
        self.batch_sizes: list[int] = []

    def forward(self, pixels: torch.Tensor) -> list[LayerTokens]:
        self.batch_sizes.append(pixels.shape[0])
        a = self.first(pixels)
        b = self.second(a)
        return [LayerTokens(local=x, global_=x.mean(dim=(2, 3))) for x in (a, b)]


class ArrayLoader:
    """Picklable loader over in-memory arrays; ``broken`` indices raise like a corrupt file."""

    def __init__(self, arrays: list[np.ndarray], broken: tuple[int, ...] = ()) -> None:
        self.arrays, self.broken = arrays, broken

    def __call__(self, index: int) -> Image.Image:
        if index in self.broken:
            raise InvalidInputError(f"img{index}.png: truncated or corrupt image")
        return Image.fromarray(self.arrays[index])


def _images(n: int, broken: tuple[int, ...] = ()) -> ImageSource:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8) for _ in range(n)]
    return ImageSource(image_ids=tuple(f"demo-{i:05d}" for i in range(n)), load=ArrayLoader(arrays, broken),
                       decoding={"policy": "test"})


def _store(path: Path, model: FeatureModel, images: ImageSource, cfg: ExtractConfig) -> FeatureStore:
    return FeatureStore.create(path, image_ids=images.image_ids, layout=store_layout(model, cfg),
                               provenance=store_provenance(model, images, cfg))


def _expected(model: TinyModel, images: ImageSource, grid: int, *, antialias: bool) -> tuple[list, list]:
    """Direct computation, one image at a time: local (n, C, grid, grid) and global (n, C) per layer in float16."""
    with torch.no_grad():
        batch = torch.stack([image_to_tensor(images.load(i), model.info.preprocessing) for i in range(len(images))])
        outputs = model(batch)
    local = [F.interpolate(o.local, size=(grid, grid), mode="bilinear", align_corners=False,
                           antialias=antialias and o.local.shape[-1] > grid).half().numpy() for o in outputs]
    return local, [o.global_.half().numpy() for o in outputs]


@pytest.mark.parametrize("antialias", [True, False])
def test_store_matches_a_direct_computation(tmp_path: Path, antialias: bool) -> None:
    model, images = TinyModel(), _images(11)
    cfg = ExtractConfig(grids=(8, 2), chunk_images=4, batch_size=3, antialias=antialias, decode_workers=2)
    store = _store(tmp_path / "s.zarr", model, images, cfg)
    report = extract_features(model, images, store, cfg, progress=False)
    assert store.is_complete() and report.n_images == 11 and report.n_chunks == 3
    assert model.batch_sizes == [3, 1, 3, 1, 3]  # chunks of 4, 4, 3 cut into batches of 3
    for grid in (8, 2):
        local, global_ = _expected(TinyModel(), images, grid, antialias=antialias)
        got = store.read(images.image_ids, grid=grid)
        for layer in range(2):
            np.testing.assert_allclose(got.local[layer], local[layer], rtol=2e-3, atol=2e-3)
            np.testing.assert_allclose(got.global_[layer], global_[layer], rtol=2e-3, atol=2e-3)
    assert report.megabytes_written == pytest.approx(11 * 2 * (5 + 7) * (64 + 4 + 1) / 1e6)


def test_decode_threads_leave_the_model_threads_alone(tmp_path: Path) -> None:
    model, images = TinyModel(), _images(6)
    cfg = ExtractConfig(chunk_images=3, batch_size=3, decode_workers=2)
    threads = torch.get_num_threads()
    extract_features(model, images, _store(tmp_path / "s.zarr", model, images, cfg), cfg, progress=False)
    assert torch.get_num_threads() == threads


def test_only_pending_chunks_are_computed(tmp_path: Path) -> None:
    model, images = TinyModel(), _images(10)
    cfg = ExtractConfig(chunk_images=4, batch_size=4, decode_workers=0)
    store = _store(tmp_path / "s.zarr", model, images, cfg)
    extract_features(model, images, store, cfg, progress=False)
    before = store.read(images.image_ids)
    zarr.open_group(store.path, mode="r+")["chunk_done"][1] = 0  # as if chunk 1's record was never written
    store = FeatureStore.open(store.path)
    model.batch_sizes.clear()
    report = extract_features(model, images, store, cfg, progress=False)
    assert model.batch_sizes == [4] and report.n_chunks == 1 and store.is_complete()
    np.testing.assert_array_equal(store.read(images.image_ids).local[1], before.local[1])


def test_decode_failures_leave_their_chunks_pending_and_list_every_file(tmp_path: Path) -> None:
    model, images = TinyModel(), _images(12, broken=(1, 9))
    cfg = ExtractConfig(chunk_images=4, batch_size=2)
    store = _store(tmp_path / "s.zarr", model, images, cfg)
    with pytest.raises(InvalidInputError) as caught:
        extract_features(model, images, store, cfg, progress=False)
    assert "img1.png" in str(caught.value) and "img9.png" in str(caught.value)
    assert "2 images failed" in str(caught.value)
    assert store.pending_chunks() == [0, 2]


def test_store_of_other_images_is_refused(tmp_path: Path) -> None:
    model = TinyModel()
    cfg = ExtractConfig()
    store = _store(tmp_path / "s.zarr", model, _images(5), cfg)
    other = ImageSource(image_ids=tuple(f"x-{i}" for i in range(5)), load=_images(5).load)
    with pytest.raises(StoreMismatchError, match="image ids"):
        extract_features(model, other, store, cfg, progress=False)
    with pytest.raises(StoreMismatchError, match="grids"):
        extract_features(model, _images(5), store, ExtractConfig(grids=(4,)), progress=False)


def test_writer_errors_reach_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, images = TinyModel(), _images(8)
    cfg = ExtractConfig(chunk_images=2, batch_size=2)
    store = _store(tmp_path / "s.zarr", model, images, cfg)

    def failing_write(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_chunk", failing_write)
    with pytest.raises(OSError, match="disk full"):
        extract_features(model, images, store, cfg, progress=False)
    assert store.pending_chunks() == [0, 1, 2, 3]


def test_bf16_autocast_on_cpu_is_close_to_float32(tmp_path: Path) -> None:
    model, images = TinyModel(), _images(6)
    exact_cfg = ExtractConfig(dtype="float32", chunk_images=3)
    bf16_cfg = ExtractConfig(dtype="float32", chunk_images=3, precision="bf16")
    exact = _store(tmp_path / "a.zarr", model, images, exact_cfg)
    extract_features(model, images, exact, exact_cfg, progress=False)
    fast = _store(tmp_path / "b.zarr", model, images, bf16_cfg)
    extract_features(model, images, fast, bf16_cfg, progress=False)
    a, b = exact.read(images.image_ids), fast.read(images.image_ids)
    assert not np.array_equal(a.local[0], b.local[0])
    np.testing.assert_allclose(b.local[0], a.local[0], atol=0.05 * np.abs(a.local[0]).max())


def test_config_rules_and_precision_resolution() -> None:
    assert resolve_extract_precision(ExtractConfig(device="cpu")) == "fp32"
    assert resolve_extract_precision(ExtractConfig(device="cpu", precision="bf16")) == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        ExtractConfig(precision="int8")
    with pytest.raises(ConfigError, match="batch_size"):
        ExtractConfig(batch_size=0)


def test_provenance_separates_feature_settings_from_run_settings() -> None:
    model, images = TinyModel(), _images(3)
    record = store_provenance(model, images, ExtractConfig(batch_size=7), seed=5, run={"workers": 2})
    assert record["model"]["model_id"] == "tiny" and record["seed"] == 5
    assert record["decoding"] == {"policy": "test"}
    assert record["compute"] == {"autocast": "off", "store_dtype": "float16"}
    assert record["run"]["batch_size"] == 7 and record["run"]["workers"] == 2
    assert "packages" in record["environment"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning applies to glibc only")
def test_allocator_tuning_applies_on_glibc() -> None:
    assert tune_allocator() is True
