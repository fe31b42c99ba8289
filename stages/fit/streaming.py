"""Feature batches for training, as torch tensors: streamed from the store or held on the device.

Two sources give the same :class:`Batch` stream:

* :class:`StreamedFeatures` reads the store chunk by chunk in a shuffled chunk order,
  mixes rows in a bounded in-memory shuffle buffer and prepares batches in a
  background thread (pinned host memory and non-blocking copies on CUDA), so host
  memory stays bounded by the buffer whatever the number of images.
* :class:`ResidentFeatures` reads every requested image once and keeps the features
  on the device, so epochs need no I/O at all.

A fit opens its splits together (:func:`open_splits`): held-out images are spread over
every chunk, so the splits held are read in one pass for all of them (every split when the
training features fit, else the validation split, scored every epoch), and each epoch or
validation pass after that reads nothing.

Batch order depends only on ``(seed, epoch)``, never on thread timing, so an
interrupted fit resumed at an epoch boundary sees exactly the batches it would have.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from cache.store import FeatureStore
from stages.fit.targets import StandardisedRows
from stages.resources import free_memory

#: Fraction of free device (or host) memory resident mode may take in automatic mode.
RESIDENT_MEMORY_FRACTION = 0.4
#: Most bytes of features the shuffle buffer holds (its rows are capped to fit; with the block being
#: read and the kept rows' compaction it holds up to about 1.5 times this at once). At ViT-B size
#: (12 x 768 channels, 8x8 + global, float16: 1.2 MB per image) that is 213 images.
SHUFFLE_BUFFER_BYTES = 256 * 2**20
#: Rows of targets copied at once when splits are held together.
STACK_ROWS = 1024


@dataclass
class Batch:
    """One mini-batch on the training device.

    Attributes:
        positions: int64 array of shape (n,): rows into the requested image list.
        local: per layer, float32 tensor of shape (n, n_channels_l, grid, grid).
        global_: per layer, float32 tensor of shape (n, n_channels_l).
        target: float32 tensor of shape (n, n_vertices).
    """

    positions: np.ndarray
    local: list[torch.Tensor]
    global_: list[torch.Tensor]
    target: torch.Tensor


@dataclass
class _HostBatch:
    positions: np.ndarray
    local: list[np.ndarray]
    global_: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, index: np.ndarray) -> "_HostBatch":
        return _HostBatch(self.positions[index], [a[index] for a in self.local], [a[index] for a in self.global_])


class _ShuffleBuffer:
    """Host batches' rows in a logical order, never concatenated: batches are gathered from the parts directly.

    A concatenated copy would hold every buffered row twice while it is made (at ViT-B size
    ~0.3 GB more, at the moment the training step's own intermediates peak); here each row is held
    once, and :meth:`keep` compacts one part at a time.
    """

    def __init__(self) -> None:
        self.parts: list[_HostBatch] = []
        self.order = np.zeros(0, dtype=np.int64)   # logical row -> row of the parts' concatenation

    def __len__(self) -> int:
        return len(self.order)

    def add(self, part: _HostBatch) -> None:
        """Append ``part``'s rows at the end of the logical order."""
        start = sum(len(held) for held in self.parts)
        self.parts.append(part)
        self.order = np.concatenate([self.order, np.arange(start, start + len(part))])

    def take(self, index: np.ndarray) -> _HostBatch:
        """The logical rows ``index`` as one batch, in that order."""
        rows = self.order[index]
        if len(self.parts) == 1:
            return self.parts[0].take(rows)
        owner, offsets = self._owners(rows)
        first = self.parts[0]
        out = _HostBatch(np.empty(len(rows), dtype=first.positions.dtype),
                         [np.empty((len(rows), *a.shape[1:]), dtype=a.dtype) for a in first.local],
                         [np.empty((len(rows), *a.shape[1:]), dtype=a.dtype) for a in first.global_])
        for part_index, part in enumerate(self.parts):
            mine = np.flatnonzero(owner == part_index)
            if len(mine):
                there = rows[mine] - offsets[part_index]
                for target, source in zip([out.positions, *out.local, *out.global_],
                                          [part.positions, *part.local, *part.global_]):
                    target[mine] = source[there]
        return out

    def keep(self, index: np.ndarray) -> None:
        """Keep only the logical rows ``index``, in that order; each part shrinks to its kept rows and is released
        before the next one is copied."""
        rows = self.order[index]
        owner, offsets = self._owners(rows)
        parts, order, size = [], np.empty(len(rows), dtype=np.int64), 0
        for part_index in range(len(self.parts)):
            part, self.parts[part_index] = self.parts[part_index], None
            mine = np.flatnonzero(owner == part_index)
            if len(mine):
                order[mine] = size + np.arange(len(mine))
                parts.append(part.take(rows[mine] - offsets[part_index]))
                size += len(mine)
            del part
        self.parts, self.order = parts, order

    def _owners(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which part holds each row of the concatenation, and each part's first row in it."""
        offsets = np.cumsum([0] + [len(part) for part in self.parts])
        return np.searchsorted(offsets, rows, side="right") - 1, offsets


def feature_bytes(store: FeatureStore, n_images: int, *, layer_indices: Sequence[int], grid: int) -> int:
    """Bytes that ``n_images`` images' features of the chosen layers take in the store's dtype."""
    itemsize = np.dtype(store.layout.dtype).itemsize
    channels = sum(store.n_channels[i] for i in layer_indices)
    return int(n_images * channels * (grid * grid + 1) * itemsize)


def resident_fits(n_bytes: int, device: torch.device) -> bool:
    """Whether ``n_bytes`` of features fit comfortably in the device's free memory."""
    return n_bytes <= RESIDENT_MEMORY_FRACTION * free_memory(device)


class _FeatureSourceBase:
    """What both sources share: the id list, targets, layer choice and device transfer."""

    def __init__(self, store: FeatureStore, image_ids: Sequence[str], targets: np.ndarray, *,
                 layer_indices: Sequence[int], grid: int, device: torch.device,
                 scales: Sequence[tuple[float, float]] | None = None) -> None:
        self.store = store
        self.scales = None if scales is None else [(np.float32(a), np.float32(b)) for a, b in scales]
        self.image_ids = np.asarray(image_ids)
        self.targets = targets if isinstance(targets, StandardisedRows) else np.ascontiguousarray(targets, np.float32)
        self.layer_indices = list(layer_indices)
        self.grid = grid
        self.device = device
        self.rows = store.rows_for(self.image_ids)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    def _chunk_groups(self) -> list[np.ndarray]:
        """Positions of the requested images grouped by store chunk, each group in store order."""
        chunk_of = self.rows // self.store.chunk_images
        order = np.lexsort((self.rows, chunk_of))
        boundaries = np.flatnonzero(np.diff(chunk_of[order])) + 1
        return [group for group in np.split(order, boundaries) if len(group)]

    def _read(self, positions: np.ndarray) -> _HostBatch:
        batch = self.store.read(self.image_ids[positions], grid=self.grid)
        local = [batch.local[i] for i in self.layer_indices]
        global_ = [batch.global_[i] for i in self.layer_indices]
        if self.scales is not None:
            local = [(a * s).astype(a.dtype) for a, (s, _) in zip(local, self.scales)]
            global_ = [(a * s).astype(a.dtype) for a, (_, s) in zip(global_, self.scales)]
        return _HostBatch(positions[batch.positions], local, global_)


class StreamedFeatures(_FeatureSourceBase):
    """Batches read from the store with chunk shuffling, a shuffle buffer and background prefetch.

    Args:
        store: the feature store.
        image_ids: the images to serve, in the order ``positions`` refer to.
        targets: float32 array of shape (len(image_ids), n_vertices), or rows z-scored per batch
            (:class:`~stages.fit.targets.StandardisedRows`).
        layer_indices: store layers to serve, in order.
        grid: the stored local grid to read.
        device: where batches land.
        shuffle_buffer: rows mixed in memory at once (bounded host memory).
        prefetch: batches prepared ahead in the background thread.
    """

    def __init__(self, store: FeatureStore, image_ids: Sequence[str], targets: np.ndarray, *,
                 layer_indices: Sequence[int], grid: int, device: torch.device,
                 shuffle_buffer: int = 2048, prefetch: int = 4,
                 scales: Sequence[tuple[float, float]] | None = None) -> None:
        super().__init__(store, image_ids, targets, layer_indices=layer_indices, grid=grid, device=device,
                         scales=scales)
        per_image = feature_bytes(store, 1, layer_indices=layer_indices, grid=grid)
        self.shuffle_buffer = max(min(int(shuffle_buffer), SHUFFLE_BUFFER_BYTES // per_image), 1)
        self.prefetch = max(int(prefetch), 1)
        self.groups = self._chunk_groups()
        self.choice = f"streamed, shuffle buffer {self.shuffle_buffer} images ({self.shuffle_buffer * per_image / 1e9:.2f} GB)"

    def batches(self, *, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        """Yield batches covering every image once; shuffled by ``(seed, epoch)`` when asked."""
        host = self._host_batches(batch_size=batch_size, shuffle=shuffle, rng=np.random.default_rng([seed, epoch]))
        for prepared in _prefetched(host, self._to_tensors, self.prefetch):
            yield self._to_device(prepared)

    def _host_batches(self, *, batch_size: int, shuffle: bool, rng: np.random.Generator) -> Iterator[_HostBatch]:
        order = rng.permutation(len(self.groups)) if shuffle else range(len(self.groups))
        buffer = _ShuffleBuffer()
        for index in order:
            buffer.add(self._read(self.groups[index]))
            if len(buffer) < (self.shuffle_buffer if shuffle else batch_size):
                continue
            keep = self.shuffle_buffer // 2 if shuffle else 0
            n_emit = (len(buffer) - keep) // batch_size * batch_size
            permutation = rng.permutation(len(buffer)) if shuffle else np.arange(len(buffer))
            for start in range(0, n_emit, batch_size):
                yield buffer.take(permutation[start:start + batch_size])
            buffer.keep(permutation[n_emit:])
        if len(buffer):
            permutation = rng.permutation(len(buffer)) if shuffle else np.arange(len(buffer))
            for start in range(0, len(buffer), batch_size):
                yield buffer.take(permutation[start:start + batch_size])

    def _to_tensors(self, batch: _HostBatch) -> tuple[np.ndarray, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Host tensors in the store's dtype (pinned on CUDA); runs in the prefetch thread. They widen to float32
        only where they are used (:meth:`_to_device`), so the prefetched batches take half the memory."""
        cuda = self.device.type == "cuda"

        def convert(array: np.ndarray) -> torch.Tensor:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            return tensor.pin_memory() if cuda else tensor

        return (batch.positions, [convert(a) for a in batch.local], [convert(a) for a in batch.global_],
                convert(self.targets[batch.positions]))

    def _to_device(self, prepared: tuple) -> Batch:
        positions, local, global_, target = prepared
        cuda = self.device.type == "cuda"

        def move(tensor: torch.Tensor) -> torch.Tensor:
            return (tensor.to(self.device, non_blocking=True) if cuda else tensor).float()

        return Batch(positions, [move(t) for t in local], [move(t) for t in global_], move(target))


class ResidentFeatures(_FeatureSourceBase):
    """Every requested image's features held on the device (store dtype); no I/O per epoch.

    The tensors are allocated once and filled chunk by chunk, so building the source holds the
    features once plus one chunk's read, not a second copy."""

    def __init__(self, store: FeatureStore, image_ids: Sequence[str], targets: np.ndarray, *,
                 layer_indices: Sequence[int], grid: int, device: torch.device,
                 scales: Sequence[tuple[float, float]] | None = None) -> None:
        super().__init__(store, image_ids, targets, layer_indices=layer_indices, grid=grid, device=device,
                         scales=scales)
        dtype = torch.from_numpy(np.zeros(0, dtype=store.layout.dtype)).dtype
        widths = [store.n_channels[i] for i in self.layer_indices]
        self.local = [torch.empty(self.n_images, width, grid, grid, dtype=dtype, device=device) for width in widths]
        self.global_ = [torch.empty(self.n_images, width, dtype=dtype, device=device) for width in widths]
        for group in self._chunk_groups():
            part = self._read(group)
            index = torch.from_numpy(part.positions).to(device)
            for held, values in zip(self.local + self.global_, part.local + part.global_):
                held[index] = torch.from_numpy(np.ascontiguousarray(values)).to(device)
        self.targets = np.ascontiguousarray(self.targets, dtype=np.float32)   # resident: held whole
        self.target_tensor = torch.from_numpy(self.targets).to(device)
        self.choice = "resident"

    def split(self, counts: Sequence[int]) -> list["ResidentFeatures"]:
        """Consecutive runs of ``counts`` images as sources of their own (views of the held features and targets:
        nothing is read or copied)."""
        parts, start = [], 0
        for count in counts:
            part = object.__new__(ResidentFeatures)
            part.__dict__.update(self.__dict__)
            rows = slice(start, start + count)
            part.image_ids, part.rows = self.image_ids[rows], self.rows[rows]
            part.local, part.global_ = [t[rows] for t in self.local], [t[rows] for t in self.global_]
            part.targets = self.targets[rows]
            part.target_tensor = self.target_tensor[rows]
            parts.append(part)
            start += count
        return parts

    def batches(self, *, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        """Yield batches covering every image once; shuffled by ``(seed, epoch)`` when asked."""
        n = self.n_images
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            positions = order[start:start + batch_size]
            index = torch.from_numpy(positions).to(self.device)
            yield Batch(positions, [t[index].float() for t in self.local], [t[index].float() for t in self.global_],
                        self.target_tensor[index])


def residency(store: FeatureStore, n_images: int, *, layer_indices: Sequence[int], grid: int, device: torch.device,
              resident: str) -> tuple[bool, str]:
    """Whether ``n_images`` images' features are held (forced ``"on"``, or ``"auto"`` and they fit) and why."""
    if resident != "auto":
        return resident == "on", f"--resident {resident}"
    needed = feature_bytes(store, n_images, layer_indices=layer_indices, grid=grid)
    fits = resident_fits(needed, device)
    return fits, (f"auto: {needed / 1e9:.2f} GB of features {'fit' if fits else 'exceed'} "
                  f"{RESIDENT_MEMORY_FRACTION:.0%} of the {free_memory(device) / 1e9:.1f} GB free on {device.type}")


def open_features(store: FeatureStore, image_ids: Sequence[str], targets: np.ndarray, *, layer_indices: Sequence[int],
                  grid: int, device: torch.device, resident: str = "auto", shuffle_buffer: int = 2048,
                  prefetch: int = 4, scales: Sequence[tuple[float, float]] | None = None
                  ) -> StreamedFeatures | ResidentFeatures:
    """The resident source when forced (``"on"``) or when it fits (``"auto"``), else the streamed one.

    ``scales``: optional per-layer (local, global) factors applied to the features as read.
    The source's ``choice`` says which it is and, in automatic mode, why.
    """
    held, reason = residency(store, len(image_ids), layer_indices=layer_indices, grid=grid, device=device,
                             resident=resident)
    if held:
        source = ResidentFeatures(store, image_ids, targets, layer_indices=layer_indices, grid=grid, device=device,
                                  scales=scales)
    else:
        source = StreamedFeatures(store, image_ids, targets, layer_indices=layer_indices, grid=grid, device=device,
                                  shuffle_buffer=shuffle_buffer, prefetch=prefetch, scales=scales)
    source.choice = f"{source.choice} ({reason})"
    return source


def open_splits(store: FeatureStore, splits: dict[str, tuple[np.ndarray, Any]], *, hold: Sequence[str],
                layer_indices: Sequence[int], grid: int, device: torch.device, resident: str = "auto",
                shuffle_buffer: int = 2048, prefetch: int = 4, scales: Sequence[tuple[float, float]] | None = None
                ) -> dict[str, StreamedFeatures | ResidentFeatures]:
    """A source per split (``name -> (image_ids, targets)``); the splits named in ``hold`` are held together.

    A fit's splits share the store's chunks (held-out images are spread over all of them), so
    each held source read alone decodes the chunks again. The splits in ``hold`` (``"on"``, or
    ``"auto"`` when they fit together) are read in one pass for all of them and every epoch or
    evaluation after costs no I/O; the others are streamed. Each source's ``choice`` says which and why.
    """
    names = [name for name in splits if name in hold]
    n_images = sum(len(splits[name][0]) for name in names)
    held, reason = residency(store, n_images, layer_indices=layer_indices, grid=grid, device=device,
                             resident=resident) if names else (False, "")
    sources: dict[str, StreamedFeatures | ResidentFeatures] = {}
    if held:
        together = ResidentFeatures(store, np.concatenate([splits[name][0] for name in names]),
                                    _stacked_rows([splits[name][1] for name in names]), layer_indices=layer_indices,
                                    grid=grid, device=device, scales=scales)
        sources.update(zip(names, together.split([len(splits[name][0]) for name in names])))
        for name in names:
            sources[name].choice = f"resident, {' + '.join(names)} read in one pass ({reason})"
    for name, (ids, targets) in splits.items():
        if name not in sources:
            sources[name] = StreamedFeatures(store, ids, targets, layer_indices=layer_indices, grid=grid,
                                             device=device, shuffle_buffer=shuffle_buffer, prefetch=prefetch,
                                             scales=scales)
            sources[name].choice = f"{sources[name].choice} ({reason if name in names else 'not held: read at each use'})"
    return sources


def _stacked_rows(parts: Sequence[Any]) -> np.ndarray:
    """The row-wise concatenation of float32 arrays or lazily z-scored rows, filled a block of rows at a time (a
    lazy part is never materialised whole beside the result)."""
    out = np.empty((sum(len(part) for part in parts), parts[0].shape[1]), dtype=np.float32)
    start = 0
    for part in parts:
        for offset in range(0, len(part), STACK_ROWS):
            rows = np.arange(offset, min(offset + STACK_ROWS, len(part)))
            out[start + rows] = part[rows]
        start += len(part)
    return out


def feature_scales(store: FeatureStore, image_ids: Sequence[str], *, layer_indices: Sequence[int], grid: int,
                   max_images: int = 256) -> list[tuple[float, float]]:
    """Per layer, 1 / root-mean-square of its local and of its global features over (up to) ``max_images`` images.

    Network blocks differ in activation magnitude by orders of magnitude; at the start of
    training the layer selector's gradient is proportional to that magnitude, so the
    loudest layer wins for every vertex. Scaling each layer to unit RMS removes that bias.
    """
    batch = store.read(list(image_ids)[:max_images], grid=grid)
    scales = []
    for index in layer_indices:
        local = np.sqrt(np.mean(np.square(batch.local[index], dtype=np.float64)))
        global_ = np.sqrt(np.mean(np.square(batch.global_[index], dtype=np.float64)))
        scales.append((float(1.0 / max(local, 1e-12)), float(1.0 / max(global_, 1e-12))))
    return scales


def _prefetched(items: Iterator, prepare, depth: int) -> Iterator:
    """Run ``prepare`` over ``items`` in a background thread, ``depth`` results ahead; errors re-raised here."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                results.put((True, prepare(item)))
            results.put((True, done))
        except BaseException as error:  # handed to the consumer, which re-raises it
            results.put((False, error))

    worker = threading.Thread(target=produce, name="feature-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            ok, value = results.get()
            if not ok:
                raise value
            if value is done:
                return
            yield value
    finally:
        stop.set()
        while worker.is_alive():
            try:
                results.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()
