"""Feature store read speed: iter_batches against raw zarr chunk reads of the same data.

Builds a store shaped like a 12-layer ViT-B at the 8x8 grid (default 600 images x 12
layers x 768 channels, float16, ~0.7 GB) in a temporary folder, then measures in one run,
each phase in a fresh process (so its peak RSS is its own, not a leftover heap):

- write: ``write_chunk`` over every block;
- baseline: every zarr chunk of every feature array read once, one after another, plain zarr;
- ``iter_batches`` over all ids, in order and chunk-shuffled, and with batches of exactly
  one chunk (views, no copy: the cost of cutting batches across chunks shows as the
  difference); ``read`` of 256 random ids;
- ``iter_batches`` feeding a consumer that waits (GIL-free, like an accelerator step) as
  long per batch as the reading took: with the background prefetch, the total should
  approach half of reading + consuming back to back;
- the codec choice: one layer written with zstd level 1 (the store's), zstd level 3
  (zarr's default) and Blosc zstd + byte shuffle: compression ratio and CPU cost.

Prints wall and CPU seconds, MB/s, the ratio of each read's throughput to the baseline's
(per wall second and per CPU second; 1.0 = as fast as plain sequential chunk reads) and
peak RSS. This machine's cores are shared, so wall times swing with other load; CPU
seconds much less. Read phases run ``--repeats`` times and report the fastest. The page
cache is warm after writing, so reads measure decoding and copying, not the disk.
Random normal features barely compress; real ones do somewhat (environment.md).

Usage: python bench/store_read.py [--images 600] [--layers 12] [--channels 768] [--grid 8]
                                  [--batch-size 64] [--repeats 2] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache.store import FeatureStore, StoreLayout  # noqa: E402

MB = 1e6
READ_PHASES = ("baseline raw zarr chunks", "iter_batches", "iter_batches shuffle", "iter_batches batch=chunk",
               "read 256 random ids")


def write_store(args: argparse.Namespace) -> int:
    """Create the store and fill every block with one block of random features, reused
    (zstd compresses each chunk on its own), so the time is the store's, not the generator's."""
    layout = StoreLayout(layer_names=tuple(f"block{i}" for i in range(args.layers)),
                         n_channels=(args.channels,) * args.layers, grids=(args.grid,))
    ids = [f"demo-{i:05d}" for i in range(args.images)]
    store = FeatureStore.create(args.store, image_ids=ids, layout=layout, provenance={"bench": "store_read"})
    rng = np.random.default_rng(0)
    n = store.chunk_images
    local = [rng.standard_normal((n, width, args.grid, args.grid), dtype=np.float32).astype(np.float16)
             for width in store.n_channels]
    global_ = [rng.standard_normal((n, width), dtype=np.float32).astype(np.float16) for width in store.n_channels]
    n_bytes = 0
    for chunk in store.pending_chunks():
        rows = store.chunk_rows(chunk)
        n_rows = rows.stop - rows.start
        store.write_chunk(chunk, local={args.grid: [v[:n_rows] for v in local]}, global_=[v[:n_rows] for v in global_])
        n_bytes += sum(v[:n_rows].nbytes for v in local + global_)
    return n_bytes


def read_raw_chunks(args: argparse.Namespace) -> int:
    """Baseline: each zarr chunk of each feature array read once, sequentially, plain zarr."""
    store = FeatureStore.open(args.store)
    group = zarr.open_group(args.store, mode="r")
    arrays = [array for name, array in group.arrays() if name.startswith(("local_", "global_"))]
    n_bytes = 0
    for chunk in range(store.n_chunks):
        rows = store.chunk_rows(chunk)
        for array in arrays:
            n_bytes += array[rows].nbytes
    return n_bytes


def iterate(args: argparse.Namespace, *, shuffle: bool = False, chunk_sized: bool = False) -> int:
    """Bytes served by iter_batches over every id; ``args.consumer_s`` of GIL-free waiting
    per batch stands for a training step on an accelerator. ``chunk_sized`` batches are
    views of the decoded blocks (no batch straddles two blocks, so nothing is copied)."""
    store = FeatureStore.open(args.store)
    batch_size = store.chunk_images if chunk_sized else args.batch_size
    n_bytes = 0
    for batch in store.iter_batches(store.image_ids, batch_size=batch_size, shuffle=shuffle, seed=0):
        n_bytes += sum(values.nbytes for values in batch.local + batch.global_)
        time.sleep(args.consumer_s)
    return n_bytes


def read_subset(args: argparse.Namespace) -> int:
    store = FeatureStore.open(args.store)
    subset = np.random.default_rng(0).choice(store.image_ids, size=min(256, store.n_images), replace=False)
    batch = store.read(subset)
    return sum(values.nbytes for values in batch.local + batch.global_)


PHASES: dict[str, Callable[[argparse.Namespace], int]] = {
    "write (write_chunk)": write_store,
    "baseline raw zarr chunks": read_raw_chunks,
    "iter_batches": iterate,
    "iter_batches shuffle": lambda args: iterate(args, shuffle=True),
    "iter_batches batch=chunk": lambda args: iterate(args, chunk_sized=True),
    "read 256 random ids": read_subset,
    "iter_batches + consumer": iterate,
}


def run_phase(args: argparse.Namespace) -> None:
    """In a child process: run one phase, print its measurements as one JSON line."""
    rss_start = psutil.Process().memory_info().rss / MB
    start, cpu = time.perf_counter(), time.process_time()
    n_bytes = PHASES[args.phase](args)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    print(json.dumps({"wall": wall, "cpu": cpu, "bytes": n_bytes, "rss_start": rss_start, "rss_peak": peak}))


def measure(args: argparse.Namespace, phase: str, *, consumer_s: float = 0.0) -> dict[str, float]:
    command = [sys.executable, __file__, "--phase", phase, "--store", str(args.store), "--consumer-s", str(consumer_s)]
    for name in ("images", "layers", "channels", "grid", "batch_size"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def compare_codecs(store_path: Path, root: Path) -> list[str]:
    """One layer's local array written and read back, chunk by chunk, with each candidate codec."""
    store = FeatureStore.open(store_path)
    group = zarr.open_group(store_path, mode="r")
    source = group[sorted(name for name in group.array_keys() if name.startswith("local_"))[0]][:]
    candidates = {
        "zstd 1 (the store's)": (zarr.codecs.ZstdCodec(level=1),),
        "zstd 3 (zarr default)": (zarr.codecs.ZstdCodec(level=0),),
        "blosc zstd 3 + shuffle": (zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),),
    }
    lines = []
    for index, (label, compressors) in enumerate(candidates.items()):
        path = root / f"codec-{index}.zarr"
        array = zarr.create_array(path, shape=source.shape, chunks=(store.chunk_images, *source.shape[1:]),
                                  dtype=source.dtype, compressors=compressors)
        start = time.process_time()
        for chunk in range(store.n_chunks):
            rows = store.chunk_rows(chunk)
            array[rows] = source[rows]
        write_s = time.process_time() - start
        start = time.process_time()
        for chunk in range(store.n_chunks):
            array[store.chunk_rows(chunk)]
        read_s = time.process_time() - start
        on_disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        lines.append(f"  {label:24s} ratio {source.nbytes / on_disk:5.3f}  write {source.nbytes / MB / write_s:6.0f} "
                     f"MB/CPU-s  read {source.nbytes / MB / read_s:6.0f} MB/CPU-s")
    return lines


def report(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bddn-store-bench-", dir=args.dir))
    args.store = root / "bench.zarr"
    try:
        results = {"write (write_chunk)": measure(args, "write (write_chunk)")}
        store = FeatureStore.open(args.store)
        print(f"store: {args.images} images x {args.layers} layers x {args.channels} ch x {args.grid}x{args.grid} "
              f"float16, {store.chunk_images} images/chunk ({store.n_chunks} chunks), batch {args.batch_size}, "
              f"codec {zarr.open_group(args.store, mode='r').attrs['bddn_feature_store']['codec']}, "
              f"{psutil.cpu_count()} CPUs (load {psutil.getloadavg()[0]:.1f}), zarr {zarr.__version__}")
        for _ in range(args.repeats):
            for phase in READ_PHASES:
                result = measure(args, phase)
                if phase not in results or result["wall"] < results[phase]["wall"]:
                    results[phase] = result
        n_batches = -(-args.images // args.batch_size)
        consumer_s = results["iter_batches"]["wall"] / n_batches
        results["iter_batches + consumer"] = measure(args, "iter_batches + consumer", consumer_s=consumer_s)

        base = results["baseline raw zarr chunks"]
        print(f"{'phase':26s} {'wall s':>7s} {'CPU s':>6s} {'MB':>5s} {'MB/s':>5s} {'vs baseline':>11s} "
              f"{'per CPU-s':>9s} {'RSS start':>9s} {'peak MB':>7s}")
        for label, r in results.items():
            ratios = (f"{r['bytes'] / r['wall'] / (base['bytes'] / base['wall']):11.2f} "
                      f"{r['bytes'] / r['cpu'] / (base['bytes'] / base['cpu']):9.2f}")
            if label in ("write (write_chunk)", "iter_batches + consumer"):
                ratios = " " * 21
            print(f"{label:26s} {r['wall']:7.2f} {r['cpu']:6.2f} {r['bytes'] / MB:5.0f} {r['bytes'] / MB / r['wall']:5.0f} "
                  f"{ratios} {r['rss_start']:9.0f} {r['rss_peak']:7.0f}")
        alone, together = results["iter_batches"]["wall"], results["iter_batches + consumer"]["wall"]
        print(f"overlap: {n_batches} batches x {consumer_s * 1000:.0f} ms consumer; reading alone {alone:.2f} s, "
              f"back to back would be {alone + n_batches * consumer_s:.2f} s, with prefetch {together:.2f} s "
              f"(ideal ~{max(alone, n_batches * consumer_s):.2f} s)")
        print("codecs (one layer's local array, CPU time, chunk by chunk):")
        print("\n".join(compare_codecs(args.store, root)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--channels", type=int, default=768)
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each read phase; the fastest is reported")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the temporary store (default: system temp)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--consumer-s", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
