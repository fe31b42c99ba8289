"""The synthetic data of ``bench/fit_scale.py``: a random ViT-B-shaped store and a subject with a planted answer.

Data, and why:

* Store: written by a pool of processes (``FeatureStore.write_chunk`` allows different
  processes to write different image blocks at once; each call also encodes its arrays in
  threads), one block in memory per process, each block seeded by ``(seed, block)``.
  Workers also return each image's projection on a random rank-``READOUT_RANK`` basis per
  layer and position, so the responses need no second pass over the store.
* Vertices: fsaverage (order 7) indices, half per hemisphere, drawn without repeats. Real
  order-7 sphere coordinates need a FreeSurfer ``fsaverage`` folder (only fsaverage5, with
  10,242 vertices per hemisphere, ships offline), so each hemisphere's points are drawn
  uniformly on a posterior cap (60 degrees) of the radius-100 sphere, and the right
  hemisphere is shifted along x as the method prescribes; the fit only uses these coordinates.
* Planted maps, smooth over the cap: equal-area rings around the pole pick the layer (pole =
  first layer); inside a ring, the distance picks the grid row and the azimuth the column;
  the outer fifth of each ring reads the global token. Each vertex reads a random unit
  combination of its layer's rank-8 projection, plus Gaussian noise for a noise ceiling
  drawn uniformly in 0.1..0.6.
* Splits: seeded; 5 % test and 5 % of the rest validation (test 492, validation 467,
  training 8,882 images at full scale), close to the reference's 9,000 training images;
  the project's Algonauts reader holds out 10 % + 10 %, so this is the heavier case.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from cache.errors import InvalidInputError
from cache.store import FeatureStore, StoreLayout
from stages.mesh import FSAVERAGE7_VERTICES
from stages.subject import Subject

GRID = 8
#: Rank of each layer's planted read-out basis.
READOUT_RANK = 8
#: Outer share of each layer's ring whose vertices read the global token.
GLOBAL_SHARE = 0.2
#: Half-angle of the spherical cap holding each hemisphere's vertices, and the sphere radius.
CAP_DEGREES, SPHERE_RADIUS = 60.0, 100.0
#: Right-hemisphere shift along x, in units of the left hemisphere's x extent (method.md).
RH_SHIFT = 1.5
TEST_FRACTION = VAL_FRACTION = 0.05
NOISE_CEILING_RANGE = (0.1, 0.6)


@lru_cache(maxsize=1)
def readout_basis(seed: int, n_layers: int, n_channels: int) -> np.ndarray:
    """float32 array of shape (n_layers, n_channels, READOUT_RANK), unit-norm columns: each layer's planted basis."""
    basis = np.random.default_rng([seed, 1]).standard_normal((n_layers, n_channels, READOUT_RANK), dtype=np.float32)
    return basis / np.linalg.norm(basis, axis=1, keepdims=True)


@lru_cache(maxsize=1)
def _open_store(path: str) -> FeatureStore:
    return FeatureStore.open(path)


def write_block(path: str, chunk: int, seed: int) -> tuple[int, np.ndarray]:
    """Fill image block ``chunk`` with seeded standard-normal float16 features (runs in a worker process).

    Returns the block index and its projections, float32 of shape (n_rows, n_layers, grid^2 + 1,
    READOUT_RANK): per layer, each cell's local token (row-major, y then x) and last the global
    token, projected on that layer's read-out basis, from the float16 values as stored.
    """
    store = _open_store(path)
    rows = store.chunk_rows(chunk)
    n_rows, n_layers, width = rows.stop - rows.start, store.n_layers, store.n_channels[0]
    basis = readout_basis(seed, n_layers, width)
    rng = np.random.default_rng([seed, 0, chunk])
    local, global_ = [], []
    projections = np.empty((n_rows, n_layers, GRID * GRID + 1, READOUT_RANK), dtype=np.float32)
    for layer in range(n_layers):
        tokens = rng.standard_normal((n_rows, width, GRID, GRID), dtype=np.float32).astype(np.float16)
        pooled = rng.standard_normal((n_rows, width), dtype=np.float32).astype(np.float16)
        cells = tokens.reshape(n_rows, width, GRID * GRID).transpose(0, 2, 1).astype(np.float32)
        projections[:, layer, :-1] = cells @ basis[layer]
        projections[:, layer, -1] = pooled.astype(np.float32) @ basis[layer]
        local.append(tokens)
        global_.append(pooled)
    store.write_chunk(chunk, local={GRID: local}, global_=global_)
    return chunk, projections


def build_store(path: Path, args: argparse.Namespace) -> tuple[FeatureStore, np.ndarray]:
    """A complete store at ``path`` and every image's planted projections, shape (n_images, n_layers, cells + 1, rank).

    Blocks are written by ``args.workers`` spawned processes (no fork of this threaded
    process), each holding one block at a time.
    """
    layout = StoreLayout(layer_names=tuple(f"block{i:02d}" for i in range(args.layers)),
                         n_channels=(args.channels,) * args.layers, grids=(GRID,), dtype="float16",
                         chunk_images=args.chunk_images)
    ids = [f"image-{i:05d}" for i in range(args.images)]
    store = FeatureStore.create(path, image_ids=ids, layout=layout, overwrite=True,
                                provenance={"model": {"model_id": "random:fit-scale"}, "seed": args.seed})
    projections = np.empty((args.images, args.layers, GRID * GRID + 1, READOUT_RANK), dtype=np.float32)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(args.workers, store.n_chunks), mp_context=context) as pool:
        futures = [pool.submit(write_block, str(path), chunk, args.seed) for chunk in range(store.n_chunks)]
        for future in futures:
            chunk, values = future.result()
            rows = store.chunk_rows(chunk)
            projections[rows] = values
    store = FeatureStore.open(path)
    if not store.is_complete():
        raise InvalidInputError(f"store {path} has unfinished blocks {store.pending_chunks()[:5]} after writing")
    return store, projections


def cap_points(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points uniform on the posterior cap: coordinates (n, 3), equal-area radius t in [0, 1), azimuth in [0, 2 pi)."""
    t = rng.random(n)
    cos_theta = 1.0 - t * (1.0 - math.cos(math.radians(CAP_DEGREES)))
    sin_theta = np.sqrt(1.0 - cos_theta ** 2)
    azimuth = rng.uniform(0.0, 2 * math.pi, n)
    coords = SPHERE_RADIUS * np.stack([sin_theta * np.cos(azimuth), -cos_theta, sin_theta * np.sin(azimuth)], axis=1)
    return coords, t, azimuth


def make_subject(store: FeatureStore, projections: np.ndarray, args: argparse.Namespace, *,
                 batch_images: int = 64) -> tuple[Subject, np.ndarray]:
    """The synthetic subject (see the module docs) and each vertex's planted layer, shape (n_vertices,).

    Responses are computed ``batch_images`` rows at a time: one (rows, n_vertices, rank) gather
    of ``projections`` and the noise for those rows.
    """
    rng = np.random.default_rng([args.seed, 2])
    n_left = args.vertices // 2
    hemisphere = np.where(np.arange(args.vertices) < n_left, "lh", "rh")
    index = np.concatenate([np.sort(rng.choice(FSAVERAGE7_VERTICES, size=n, replace=False))
                            for n in (n_left, args.vertices - n_left)]).astype(np.int64)
    coords, t, azimuth = cap_points(args.vertices, rng)
    left, right = hemisphere == "lh", hemisphere == "rh"
    x_left = coords[left, 0]
    coords[right, 0] += x_left.min() + RH_SHIFT * (x_left.max() - x_left.min()) - coords[right, 0].min()
    layer = np.minimum((t * args.layers).astype(np.int64), args.layers - 1)
    ring = t * args.layers - layer
    row = np.minimum((ring / (1 - GLOBAL_SHARE) * GRID).astype(np.int64), GRID - 1)
    column = np.minimum((azimuth / (2 * math.pi) * GRID).astype(np.int64), GRID - 1)
    slot = np.where(ring >= 1 - GLOBAL_SHARE, GRID * GRID, row * GRID + column)
    weights = rng.standard_normal((args.vertices, READOUT_RANK)).astype(np.float32)
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    ceiling = rng.uniform(*NOISE_CEILING_RANGE, args.vertices).astype(np.float32)
    noise_sd = np.sqrt((1 - ceiling) / ceiling).astype(np.float32)
    responses = np.empty((args.images, args.vertices), dtype=np.float32)
    for start in range(0, args.images, batch_images):
        block = projections[start:start + batch_images][:, layer, slot]                  # (rows, vertices, rank)
        signal = np.einsum("nvk,vk->nv", block, weights)
        responses[start:start + len(block)] = signal + noise_sd * rng.standard_normal(signal.shape, dtype=np.float32)
    order = np.random.default_rng([args.seed, 3]).permutation(args.images)
    n_test = int(round(TEST_FRACTION * args.images))
    n_val = int(round(VAL_FRACTION * (args.images - n_test)))
    splits = {"train": np.sort(order[n_test + n_val:]), "val": np.sort(order[n_test:n_test + n_val]),
              "test": np.sort(order[:n_test])}
    subject = Subject(name="subj01", stimulus_ids=np.asarray(store.image_ids), responses=responses,
                      hemisphere=hemisphere, fsaverage_index=index, sphere_coords=coords.astype(np.float32),
                      rois={"nsdgeneral": np.ones(args.vertices, dtype=bool)}, splits=splits, split_seed=args.seed,
                      noise_ceiling=ceiling, mesh="fsaverage", source={"reader": "bench/fit_scale.py"})
    return subject, layer
