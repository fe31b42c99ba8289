"""Stage one: run a frozen backbone over an image set once and fill a feature store.

Pipeline (one process): background threads decode and preprocess whole batches
ahead of the model; the model runs on the device (CUDA when present, with bf16
autocast there by default; ``stages.device``); each block's local tokens are resized to the store's
grids (``stages.features.token_grids``) and cast to the store dtype; finished image blocks
(chunks) go through a bounded queue to a writer thread, so writes overlap compute.

Batches never cross a chunk boundary: chunk ``c`` is always cut into the same
batches (``batch_size`` rows, the last one shorter), so a resumed run, a dask
worker and an uninterrupted run compute every row in an identical batch. With the
same number of torch threads the stored arrays are bit-identical (a resumed run; a
dask worker against a one-thread run). With different thread counts (dask workers run
one thread each, a process uses every core) the CPU kernels split their sums
differently, so values agree only to rounding: within 2 units in the last place of the
store dtype (tested). Only pending chunks are computed; a chunk whose
images fail to decode is never marked complete, and the run ends with one
InvalidInputError listing those files after the other chunks are written.
"""

from __future__ import annotations

import ctypes
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cache.errors import ConfigError, InvalidInputError, StoreMismatchError
from cache.provenance import environment_record, hash_strings
from cache.store import FeatureStore, StoreLayout
from stages.device import Precision, autocast_context, parse_precision, resolve_device, resolve_precision
from stages.features.image_source import ImageSource
from stages.features.token_grids import MAX_GRID, tokens_to_numpy
from stages.models.base import FeatureModel
from stages.models.preprocess import image_to_tensor

#: How a store's provenance names the precision its features were computed in (``compute.autocast``): fp32 has
#: always been recorded as "off", so stores built before the one precision vocabulary still match.
_PROVENANCE_AUTOCAST = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of stage one.

    Attributes:
        grids: side lengths of the local-token grids stored per layer (the paper: 8).
        dtype: store element type, ``"float16"`` or ``"float32"``.
        chunk_images: images per store chunk; ``None`` lets the store pick ~8 MiB chunks.
        antialias: widen the bilinear filter when shrinking token grids (``stages.features.token_grids``);
            ``False`` is the reference's plain bilinear.
        batch_size: images per forward pass (never crossing a chunk boundary).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` (bf16 on CUDA, fp32 on CPU), ``"fp32"``, ``"bf16"`` or ``"fp16"``
            (``stages.device``); an explicit bf16/fp16 applies on the CPU too. Changes the
            features, so it is part of the store's compared provenance; on this project's
            CPUs with AMX, ``"bf16"`` runs ViTs 2-3x faster.
        decode_workers: threads decoding and preprocessing images ahead of the model.
    """

    grids: tuple[int, ...] = (8,)
    dtype: str = "float16"
    chunk_images: int | None = None
    antialias: bool = True
    batch_size: int = 32
    device: str = "auto"
    precision: Precision = "auto"
    decode_workers: int = 2

    def __post_init__(self) -> None:
        parse_precision(self.precision)
        if self.batch_size < 1 or self.decode_workers < 0:
            raise ConfigError(f"batch_size must be >= 1 and decode_workers >= 0, got {self.batch_size}, "
                              f"{self.decode_workers}")
        if not self.grids or not all(1 <= grid <= MAX_GRID for grid in self.grids):
            raise ConfigError(f"grids {list(self.grids)}: each must be 1..{MAX_GRID} cells a side; {MAX_GRID} is the "
                              "finest token grid of any registered model, and a finer store grid only interpolates "
                              "between tokens while the store grows with its square (the method reads 8)")


@dataclass
class ExtractReport:
    """What one extraction did: images and chunks computed, time, rates and bytes handed to the store."""

    n_images: int = 0
    n_chunks: int = 0
    seconds: float = 0.0
    megabytes_written: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.megabytes_written / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.n_images} images in {self.n_chunks} chunks, {self.seconds:.1f} s, "
                f"{self.images_per_second:.1f} images/s, {self.megabytes_written:.1f} MB written "
                f"({self.megabytes_per_second:.1f} MB/s)")


def tune_allocator() -> bool:
    """Keep large freed buffers inside the process (glibc ``mallopt``); True when applied.

    By default glibc serves every allocation above a (dynamic, at most 32 MiB) threshold
    with a fresh ``mmap`` and returns it on free, so each forward pass page-faults its
    activation buffers in again: measured here, a mobilenet_v2 pass over 96 images took
    1.4 million page faults and 2.9 s; with large buffers kept in the heap, 0 faults and
    1.05 s. The price is that the process keeps its peak memory until it exits. A no-op
    off glibc. Process-wide: the ``bddn features`` command and dask workers call it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31))
    except (OSError, AttributeError):
        return False


def resolve_extract_precision(cfg: ExtractConfig) -> str:
    """The precision the model runs in under ``cfg``: ``"bf16"``, ``"fp16"`` or ``"fp32"``."""
    return resolve_precision(cfg.precision, resolve_device(cfg.device), cpu_autocast=("bf16", "fp16"))


def store_layout(model: FeatureModel, cfg: ExtractConfig) -> StoreLayout:
    """The store layout a model's features take under ``cfg``."""
    return StoreLayout(layer_names=model.info.layer_names, n_channels=model.info.n_channels, grids=tuple(cfg.grids),
                       dtype=cfg.dtype, chunk_images=cfg.chunk_images)


def store_provenance(model: FeatureModel, images: ImageSource, cfg: ExtractConfig, *,
                     seed: int | None = None, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that defines the features (compared on reopening) plus the ``environment`` and ``run`` records.

    ``seed`` is the torch seed used for random-init weights (None for trained weights);
    ``run`` holds settings that do not change the values (batch size, workers, device).
    """
    return {
        "model": model.info.to_dict(),
        "decoding": dict(images.decoding),
        "tokens": {"resize": "bilinear", "align_corners": False, "antialias": cfg.antialias,
                   "global": "model's global token per block"},
        "compute": {"autocast": _PROVENANCE_AUTOCAST[resolve_extract_precision(cfg)], "store_dtype": cfg.dtype},
        "image_ids_sha256": hash_strings(images.image_ids),
        "seed": seed,
        "run": {"device": str(resolve_device(cfg.device)), "batch_size": cfg.batch_size,
                "decode_workers": cfg.decode_workers, **(run or {})},
        "environment": environment_record(),
    }


def extract_features(model: FeatureModel, images: ImageSource, store: FeatureStore, cfg: ExtractConfig, *,
                     progress: bool = True) -> ExtractReport:
    """Compute every pending chunk of ``store`` from ``images`` with ``model``.

    Raises StoreMismatchError when the store's ids or layout do not match the images
    and model, InvalidInputError (listing the files) when images fail to decode; the
    chunks holding them stay pending while all others are written.
    """
    report = extract_chunks(model, images, store, cfg, chunks=store.pending_chunks(), progress=progress)
    raise_for_failures(report, store)
    return report


def raise_for_failures(report: ExtractReport, store: FeatureStore) -> None:
    """One InvalidInputError naming every image that failed to decode, if any."""
    if report.failures:
        raise InvalidInputError(
            f"{len(report.failures)} images failed to decode during extraction; their chunks in {store.path} stay "
            f"unfinished (fix or remove the files; a rerun with the same image list resumes): "
            + "; ".join(report.failures))


def extract_chunks(model: FeatureModel, images: ImageSource, store: FeatureStore, cfg: ExtractConfig, *,
                   chunks: Sequence[int], progress: bool = False) -> ExtractReport:
    """Compute and write the given chunks; decode failures are returned in ``report.failures``, not raised."""
    _check_match(model, images, store, cfg)
    device = resolve_device(cfg.device)
    precision = resolve_extract_precision(cfg)
    # On the CPU, oneDNN's convolutions run faster on channels-last (NHWC) tensors: mobilenet_v2's forward
    # pass takes about two thirds of the time (same values to float rounding); 4-D weights are all it changes.
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    model = model.to(device, memory_format=layout).eval()
    plan = [(chunk, rows) for chunk in chunks for rows in chunk_batches(store.chunk_rows(chunk), cfg.batch_size)]
    report = ExtractReport()
    started = time.perf_counter()
    bar = tqdm(total=sum(r.stop - r.start for _, r in plan), unit="img", desc="features", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    writer = _ChunkWriter(store, report)
    buffers: dict[int, _ChunkBuffer] = {}
    failed: set[int] = set()
    prep = model.info.preprocessing
    pin = device.type == "cuda"
    try:
        for (chunk, rows), (pixels, errors) in zip(plan, _prefetch(images, prep, plan, cfg.decode_workers, pin)):
            if errors or chunk in failed:
                report.failures += errors
                failed.add(chunk)
                buffers.pop(chunk, None)
            else:
                with torch.inference_mode(), autocast_context(device, precision):
                    layers = model(pixels.to(device, non_blocking=pin, memory_format=layout))
                local, global_ = tokens_to_numpy(layers, store.grids, antialias=cfg.antialias, dtype=store.layout.dtype)
                buffer = buffers.setdefault(chunk, _ChunkBuffer(store.chunk_rows(chunk)))
                if buffer.add(rows, local, global_):
                    writer.put(chunk, buffers.pop(chunk))
            bar.update(rows.stop - rows.start)
    finally:
        writer.close()
        bar.close()
    report.seconds = time.perf_counter() - started
    return report


def _check_match(model: FeatureModel, images: ImageSource, store: FeatureStore, cfg: ExtractConfig) -> None:
    if list(images.image_ids) != store.image_ids.tolist():
        raise StoreMismatchError(f"feature store {store.path} holds {store.n_images} image ids that differ from the "
                                 f"{len(images)} images given; create the store from the same image list")
    if tuple(model.info.layer_names) != store.layer_names or tuple(model.info.n_channels) != store.n_channels:
        raise StoreMismatchError(f"feature store {store.path} has layers {list(store.layer_names)}; model "
                                 f"{model.info.model_id} has {list(model.info.layer_names)}")
    if tuple(cfg.grids) != store.grids or cfg.dtype != store.layout.dtype:
        raise StoreMismatchError(f"feature store {store.path} has grids {list(store.grids)} and dtype "
                                 f"{store.layout.dtype}; the config asks for {list(cfg.grids)} and {cfg.dtype}")


def chunk_batches(rows: slice, batch_size: int) -> Iterator[slice]:
    """A chunk's rows cut into consecutive batches of ``batch_size`` (the last one shorter): always the same cut."""
    for start in range(rows.start, rows.stop, batch_size):
        yield slice(start, min(start + batch_size, rows.stop))


def _decode_batch(images: ImageSource, prep: Any, rows: slice, pin: bool) -> tuple[torch.Tensor | None, list[str]]:
    """Decode and preprocess rows into a tensor of shape (n_rows, 3, height, width); errors name the files."""
    tensors, errors = [], []
    for index in range(rows.start, rows.stop):
        try:
            tensors.append(image_to_tensor(images.load(index), prep))
        except InvalidInputError as error:
            errors.append(str(error))
    if errors:
        return None, errors
    batch = torch.stack(tensors)
    return (batch.pin_memory() if pin else batch), []


def _single_threaded_torch() -> None:
    """Make torch ops in this decode thread run on one thread (OpenMP's setting is per thread).

    Otherwise each preprocessing op in a decode thread opens its own OpenMP team next to
    the model's: measured here, normalising one 224 px image took 23 ms instead of 1.5 ms,
    while the model's own threads are unaffected by this per-thread setting.
    """
    if "OpenMP" in torch.__config__.parallel_info():
        torch.set_num_threads(1)


def _prefetch(images: ImageSource, prep: Any, plan: list[tuple[int, slice]], workers: int, pin: bool
              ) -> Iterator[tuple[torch.Tensor | None, list[str]]]:
    """Decoded batches in plan order, computed ``workers`` (+1) batches ahead in threads."""
    if workers == 0:
        for _, rows in plan:
            yield _decode_batch(images, prep, rows, pin)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="bddn-decode", initializer=_single_threaded_torch) as pool:
        pending: deque = deque()
        ahead = iter(plan)
        for _, rows in ahead:
            pending.append(pool.submit(_decode_batch, images, prep, rows, pin))
            if len(pending) > workers:
                break
        while pending:
            result = pending.popleft().result()
            next_item = next(ahead, None)
            if next_item is not None:
                pending.append(pool.submit(_decode_batch, images, prep, next_item[1], pin))
            yield result


class _ChunkBuffer:
    """Host arrays of one chunk, filled batch by batch; full when every row has arrived."""

    def __init__(self, rows: slice) -> None:
        self.start, self.n_rows, self.filled = rows.start, rows.stop - rows.start, 0
        self.local: dict[int, list[np.ndarray]] = {}
        self.global_: list[np.ndarray] = []

    def add(self, rows: slice, local: dict[int, list[np.ndarray]], global_: list[np.ndarray]) -> bool:
        if not self.global_:
            self.local = {g: [np.empty((self.n_rows, *a.shape[1:]), a.dtype) for a in arrays] for g, arrays in local.items()}
            self.global_ = [np.empty((self.n_rows, *a.shape[1:]), a.dtype) for a in global_]
        where = slice(rows.start - self.start, rows.stop - self.start)
        for grid, arrays in local.items():
            for target, values in zip(self.local[grid], arrays):
                target[where] = values
        for target, values in zip(self.global_, global_):
            target[where] = values
        self.filled += rows.stop - rows.start
        return self.filled == self.n_rows

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for arrays in self.local.values() for a in arrays) + sum(a.nbytes for a in self.global_)


class _ChunkWriter:
    """A thread writing finished chunks through a bounded queue; errors surface in the caller."""

    def __init__(self, store: FeatureStore, report: ExtractReport, *, depth: int = 2) -> None:
        self.store, self.report, self.error = store, report, None
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name="bddn-writer", daemon=True)
        self.thread.start()

    def put(self, chunk: int, buffer: _ChunkBuffer) -> None:
        self._raise_error()
        self.queue.put((chunk, buffer))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue
            chunk, buffer = item
            try:
                self.store.write_chunk(chunk, local=buffer.local, global_=buffer.global_)
            except BaseException as error:  # re-raised in the caller's thread
                self.error = error
                continue
            self.report.n_images += buffer.n_rows
            self.report.n_chunks += 1
            self.report.megabytes_written += buffer.nbytes / 1e6
