"""A small finished feature store of random features, and matching image files, for the synthetic-subject tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cache.store import FeatureStore, StoreLayout

CHANNELS = (8, 16, 24, 32)


def random_store(path: Path, *, n_images: int, grid: int = 8, seed: int = 0,
                 channels: tuple[int, ...] = CHANNELS) -> FeatureStore:
    """Store of ``n_images`` (ids ``demo-00000``...) with spatially smooth random local tokens of varied scale."""
    ids = [f"demo-{i:05d}" for i in range(n_images)]
    layout = StoreLayout(layer_names=tuple(f"block{i}" for i in range(len(channels))), n_channels=channels,
                         grids=(grid,), dtype="float32")
    store = FeatureStore.create(path, image_ids=ids, layout=layout, provenance={"model": "random-test-features"})
    rng = np.random.default_rng(seed)
    for chunk in range(store.n_chunks):
        rows = store.chunk_rows(chunk)
        n = rows.stop - rows.start
        local = []
        for layer, width in enumerate(channels):
            coarse = rng.normal(size=(n, width, 2, 2))
            smooth = np.repeat(np.repeat(coarse, grid // 2, axis=2), grid // 2, axis=3)
            tokens = smooth + 0.5 * rng.normal(size=(n, width, grid, grid))
            local.append(((layer + 1) * 3.0 * tokens + layer).astype(np.float32))
        store.write_chunk(chunk, local={grid: local}, global_=[tokens.mean(axis=(2, 3)) for tokens in local])
    return store


def image_folder(folder: Path, ids: list[str]) -> dict[str, Path]:
    """Tiny distinct PNGs named ``<id>.png``; returns id -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for number, image_id in enumerate(ids):
        pixels = np.full((16, 16, 3), number % 256, dtype=np.uint8)
        pixels[0, 0] = (number // 256, 7, 9)
        files[image_id] = folder / f"{image_id}.png"
        Image.fromarray(pixels).save(files[image_id])
    return files
