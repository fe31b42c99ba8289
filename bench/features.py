"""Stage one overhead: extraction into a store vs the bare model forward, same images, batches and dtype.

For each model: demo images are decoded and preprocessed once into tensors cut into
exactly the batches extraction uses (chunk-aligned); the bare forward runs over them
(nothing else); extraction then runs from the image files into a fresh store
(decoding, forward, token resizing, float16 cast, writes). Each is timed
``--repeats`` times, alternating, and the fastest run of each is compared:
ratio = extraction wall time / bare forward wall time (target <= 1.15). The same
ratio of process CPU time (all threads) is printed too: on a shared machine it is
less disturbed by other processes than wall time. Also: MB/s of features handed to
the store, bytes on disk, the peak RSS of the process while extracting and its
growth over the RSS just before (this process and its children).

    .venv/bin/python bench/features.py [--images 240] [--batch-size 32] [--precision auto] [--json PATH]

Stage one at the scale of real runs: a random-init ViT-B/16 (timm ``vit_base_patch16_224``,
12 blocks x 768 channels) over at least 500 images::

    .venv/bin/python bench/features.py --models timm:vit_base_patch16_224 --images 500 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache.store import FeatureStore  # noqa: E402
from pipeline.imagesets.demo import write_demo_images  # noqa: E402
from pipeline.imagesets.folder import image_source_from_folder  # noqa: E402
from stages.device import PRECISIONS, autocast_context, parse_precision, resolve_device  # noqa: E402
from stages.features.extract import (  # noqa: E402
    ExtractConfig, chunk_batches, extract_features, resolve_extract_precision,
    store_layout, store_provenance, tune_allocator,
)
from stages.models.preprocess import image_to_tensor  # noqa: E402
from stages.models.registry import ModelRequest  # noqa: E402
from stages.resources import GB, PhaseMonitor  # noqa: E402

MODELS = (
    ModelRequest("mobilenet_v2"),
    ModelRequest("timm:vit_small_patch16_224", pretrained=False),
    ModelRequest("timm:vit_base_patch16_224", pretrained=False),   # ViT-B/16: 12 blocks x 768, the scale of real runs
)
#: Models run when ``--models`` is not given (ViT-B is run on its own, on >= 500 images: see the module docs).
DEFAULT_MODELS = ("mobilenet_v2", "timm:vit_small_patch16_224")


class Timer:
    """Wall time and this process's CPU time (all threads) of a block."""

    def __enter__(self) -> "Timer":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def bare_forward(model: torch.nn.Module, batches: list[torch.Tensor], cfg: ExtractConfig) -> Timer:
    """Times of the model alone over pre-decoded batches (the same autocast as extraction).

    Each batch's outputs stay alive until the next forward returns, as in extraction, so
    both see the same allocation pattern (with glibc's default allocator the pattern alone
    changed the bare loop's time by up to 1.5x here; see ``tune_allocator``).
    """
    device = resolve_device(cfg.device)
    with Timer() as timer, torch.inference_mode(), autocast_context(device, resolve_extract_precision(cfg)):
        outputs = None
        for batch in batches:
            outputs = model(batch.to(device))  # noqa: F841 (kept alive on purpose)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return timer


def run_one(request: ModelRequest, folder: Path, work: Path, cfg: ExtractConfig, *, repeats: int
            ) -> dict[str, float | str]:
    """Bare forward and extraction of one model, alternated ``repeats`` times; the fastest of each is kept."""
    images = image_source_from_folder(folder)
    model = request.load().to(resolve_device(cfg.device))
    layout = store_layout(model, cfg)
    probe = FeatureStore.create(work / "probe.zarr", image_ids=images.image_ids, layout=layout,
                                provenance=store_provenance(model, images, cfg))
    plan = [rows for chunk in range(probe.n_chunks) for rows in chunk_batches(probe.chunk_rows(chunk), cfg.batch_size)]
    prep = model.info.preprocessing
    batches = [torch.stack([image_to_tensor(images.load(i), prep) for i in range(r.start, r.stop)]) for r in plan]
    bare_forward(model, batches[:2], cfg)  # warm-up (allocator, kernels)
    bare, extract, peak, growth, report, disk = [], [], 0, 0, None, 0
    for attempt in range(repeats):
        bare.append(bare_forward(model, batches, cfg))
        path = work / f"store{attempt}.zarr"
        store = FeatureStore.create(path, image_ids=images.image_ids, layout=layout,
                                    provenance=store_provenance(model, images, cfg))
        before = psutil.Process().memory_info().rss
        with PhaseMonitor(interval=0.02) as monitor, monitor.phase("extract"), Timer() as timer:
            report = extract_features(model, images, store, cfg, progress=False)
        extract.append(timer)
        rss_peak = monitor.record()["extract"]["peak_rss_gb"] * GB
        peak, growth = max(peak, rss_peak), max(growth, rss_peak - before)
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path)
    bare_wall, extract_wall = min(t.wall for t in bare), min(t.wall for t in extract)
    return {"model": request.name, "images": len(images), "chunk": probe.chunk_images, "bare_s": bare_wall,
            "extract_s": extract_wall, "ratio": extract_wall / bare_wall,
            "cpu_ratio": min(t.cpu for t in extract) / min(t.cpu for t in bare), "img_s": len(images) / extract_wall,
            "mb": report.megabytes_written, "mb_s": report.megabytes_written / extract_wall, "disk_mb": disk / 1e6,
            "peak_rss_mb": peak / 2**20, "rss_growth_mb": growth / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=240, help="number of demo images (default 240)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", "--autocast", default="auto", type=parse_precision, choices=PRECISIONS)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="alternating bare/extraction runs per model (default 2)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator as it is (see stages.features.extract.tune_allocator)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated subset of {', '.join(r.name for r in MODELS)} (default: the first two)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    cfg = ExtractConfig(batch_size=args.batch_size, precision=args.precision, decode_workers=args.decode_workers,
                        device=args.device)
    tuned = not args.default_allocator and tune_allocator()
    allocator = "large buffers kept in the heap" if tuned else "default allocator"
    work = Path(tempfile.mkdtemp(prefix="bddn-bench-"))
    try:
        folder = write_demo_images(work / "images", count=args.images).folder
        chosen = [request for request in MODELS if request.name in args.models.split(",")]
        rows = [run_one(request, folder, work / request.name.replace(":", "-"), cfg, repeats=args.repeats)
                for request in chosen]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nstage one overhead on {resolve_device(cfg.device)} ({torch.get_num_threads()} threads), batch "
          f"{cfg.batch_size}, precision {resolve_extract_precision(cfg)}, decode workers {cfg.decode_workers}, float16 store, "
          f"{allocator}")
    header = ("model", "images", "chunk", "bare s", "extract s", "ratio", "CPU-time ratio", "img/s", "MB", "MB/s",
              "disk MB", "peak RSS MB", "RSS growth MB")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in rows:
        print(f"{row['model']} | {row['images']} | {row['chunk']} | {row['bare_s']:.2f} | {row['extract_s']:.2f} | "
              f"{row['ratio']:.3f} | {row['cpu_ratio']:.3f} | {row['img_s']:.1f} | {row['mb']:.1f} | {row['mb_s']:.1f} | "
              f"{row['disk_mb']:.1f} | {row['peak_rss_mb']:.0f} | {row['rss_growth_mb']:.0f}")
    print("target: ratio <= 1.15")
    if args.json:
        args.json.write_text(json.dumps({"device": str(resolve_device(cfg.device)), "threads": torch.get_num_threads(),
                                         "batch_size": cfg.batch_size, "precision": resolve_extract_precision(cfg),
                                         "allocator": allocator, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
