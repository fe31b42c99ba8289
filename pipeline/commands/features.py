"""``bddn features``: stage one, a model's features for an image set in a resumable Zarr v3 store."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from cache.errors import ConfigError
from cache.jsondata import to_json_data
from cache.folder import SHOWN
from cache.integrity import damaged_chunks
from cache.store import FeatureStore
from pipeline import runroot
from pipeline.config import build_config, given_flags, load_toml, precision_flag
from pipeline.imagesets.folder import file_digests, image_source_from_folder, validate_images
from stages.device import PRECISIONS
from stages.features.extract import ExtractConfig, extract_features, store_layout, store_provenance, tune_allocator
from stages.features.scaleout import extract_features_distributed
from stages.models.registry import ModelRequest

NAME = "features"
HELP = ("stage one: run a model once over an image set and write its per-layer features to "
        "<run root>/features/<imageset>/<model>.zarr (resumes an interrupted run)")
_PRESET_TABLE = "features"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bddn features``; unset options fall back to the preset, then ExtractConfig's defaults."""
    defaults = ExtractConfig()
    model = parser.add_argument_group("model")
    model.add_argument("--model", metavar="NAME", default=runroot.DEFAULT_MODEL,
                       help=f"registry name (see `bddn models`), e.g. clip, dinov2, timm:<name>, hf:<id or dir>, "
                            f"torchvision:<name> (default {runroot.DEFAULT_MODEL})")
    model.add_argument("--random-init", action="store_true",
                       help="random weights instead of trained ones (seeded by --seed; for tests and timing)")
    model.add_argument("--seed", metavar="N", type=int, default=0, help="torch seed for --random-init weights, recorded in the store (default 0)")
    model.add_argument("--checkpoint", metavar="PATH", default=None, help="weights file or folder for models that take one (e.g. mocov3)")
    model.add_argument("--reference-preprocessing", action="store_true",
                       help="the published reference's input transform (ImageNet mean/std, 224 px squash) instead of "
                            "the model's own")
    source = parser.add_argument_group("images").add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", type=Path, default=None,
                        help="folder of images (PNG/JPEG/...; every image file directly inside it, sorted by name); "
                             "the store is named after the folder")
    source.add_argument("--imageset", metavar="NAME", default=None,
                        help=f"a named image set under <run root>/imagesets/ (default {runroot.DEFAULT_IMAGESET!r}, "
                             "written by `bddn demo-images`)")
    store = parser.add_argument_group("store")
    store.add_argument("--grid", metavar="SIZES", type=_grids, default=None, dest="grids",
                       help=f"comma-separated local-token grid sizes to store, e.g. 16,8 "
                            f"(default {','.join(map(str, defaults.grids))})")
    store.add_argument("--dtype", choices=("float16", "float32"), default=None,
                       help=f"element type on disk (default {defaults.dtype})")
    store.add_argument("--chunk-images", metavar="N", type=int, default=None,
                       help="images per store chunk (default: chosen for ~8 MiB chunks)")
    store.add_argument("--no-antialias", dest="antialias", action="store_const", const=False, default=None,
                       help="shrink token grids with plain bilinear sampling (the reference) instead of the "
                            "antialiased bilinear filter")
    store.add_argument("--overwrite", action="store_true",
                       help="delete and rebuild an existing store built with different settings")
    compute = parser.add_argument_group("compute")
    compute.add_argument("--batch-size", metavar="N", type=int, default=None, help=f"images per forward pass (default {defaults.batch_size})")
    compute.add_argument("--device", metavar="DEVICE", default=None,
                         help=f"auto (CUDA when available), cpu, cuda, cuda:N (default {defaults.device})")
    compute.add_argument("--precision", "--autocast", type=precision_flag, metavar="{" + ",".join(PRECISIONS) + "}",
                         default=None, dest="precision",
                         help="autocast of the model (stages.device): auto = bf16 on CUDA (fp16 where bf16 is "
                              "unsupported), fp32 on CPU; bf16 also applies on CPU (off = fp32) "
                              f"(default {defaults.precision}; part of the store's provenance)")
    compute.add_argument("--decode-workers", metavar="N", type=int, default=None,
                         help=f"threads decoding images ahead of the model (default {defaults.decode_workers})")
    cluster = compute.add_mutually_exclusive_group()
    cluster.add_argument("--workers", metavar="N", type=int, default=None,
                         help="start a local dask.distributed cluster of N worker processes, one chunk per task")
    cluster.add_argument("--scheduler", metavar="ADDRESS", default=None,
                         help="address of a running dask.distributed scheduler (e.g. tcp://host:8786) to use instead")
    parser.add_argument("--config", metavar="FILE", type=Path, default=None,
                        help=f"TOML preset whose [{_PRESET_TABLE}] table sets any of: "
                             + ", ".join(ExtractConfig.__dataclass_fields__))
    parser.add_argument("--verify", action="store_true",
                        help="on a finished store, decode every chunk (checksums) and check its values are finite; "
                             "damaged chunks are extracted again (default: only check that every chunk file is there)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """List the images, load the model; unless a matching store is complete: validate every image, create or
    reopen the store and fill its pending chunks."""
    tune_allocator()
    run_root = runroot.resolve_run_root(args.run_root)
    folder, imageset = runroot.image_folder(run_root, args.images, args.imageset)
    preset = load_toml(args.config).get(_PRESET_TABLE, {}) if args.config else {}
    flags = given_flags(args, ("grids", "dtype", "chunk_images", "antialias", "batch_size", "device", "precision",
                               "decode_workers"))
    cfg = build_config(ExtractConfig, preset, flags, where="features")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    images = image_source_from_folder(folder, validate=False, workers=max(1, cfg.decode_workers))
    request = ModelRequest(name=args.model, pretrained=not args.random_init, checkpoint=args.checkpoint,
                           reference_preprocessing=args.reference_preprocessing, seed=args.seed)
    model = request.load()
    run_record = {"imageset": imageset, "images_folder": str(folder), "workers": args.workers,
                  "scheduler": args.scheduler, "config": to_json_data(cfg)}
    provenance = store_provenance(model, images, cfg, seed=args.seed if args.random_init else None, run=run_record)
    path = runroot.feature_store_path(run_root, imageset, args.model)
    create = functools.partial(FeatureStore.create, path, image_ids=images.image_ids, layout=store_layout(model, cfg),
                               provenance=provenance, overwrite=args.overwrite)
    digests = file_digests([folder / name for name in images.names], workers=max(1, cfg.decode_workers))
    existing = create() if path.exists() and not args.overwrite else None  # reopens a matching store, else raises
    if existing is not None:
        _reopen_changed_images(existing, images.names, digests)
    if existing is not None and existing.is_complete():
        damaged = damaged_chunks(existing, full=args.verify)
        if not damaged:
            if existing.image_digests() is None:   # a store from before digests were kept: start keeping them
                existing.record_image_digests(digests)
            checked = "every chunk decoded and finite" if args.verify else "every chunk file present"
            print(f"features up to date: {path} ({len(images)} images; {checked})", file=sys.stderr)
            return 0
        first = next(iter(damaged.items()))
        print(f"features: {len(damaged)} damaged chunk(s) of {path} will be extracted again "
              f"(chunks {list(damaged)[:SHOWN]}; chunk {first[0]}: {first[1]})", file=sys.stderr)
        existing.reopen_chunks(list(damaged))
    validate_images(images, workers=max(1, cfg.decode_workers))  # every file decodes, before any store is made
    store = create()
    store.record_image_digests(digests)
    print(f"features: {args.model} on {len(images)} images ({imageset}), {len(store.pending_chunks())}/"
          f"{store.n_chunks} chunks to compute -> {store.path}", file=sys.stderr)
    if args.workers is None and args.scheduler is None:
        report = extract_features(model, images, store, cfg, progress=not args.no_progress)
    else:
        report = _run_on_cluster(args, request, images, store, cfg)
    print(f"features done: {report}; store {store.path}", file=sys.stderr)
    return 0


def _reopen_changed_images(store: FeatureStore, names: tuple[str, ...], digests: list[str]) -> None:
    """Images whose file content changed since their features were extracted: their chunks are computed again."""
    changed = store.changed_rows(digests)
    if changed is None or not changed.size:
        return
    chunks = sorted({int(row) // store.chunk_images for row in changed})
    shown = ", ".join(names[row] for row in changed[:SHOWN])
    print(f"features: {changed.size} image(s) changed since their features were extracted ({shown}); their "
          f"{len(chunks)} chunk(s) of {store.path} will be extracted again", file=sys.stderr)
    store.reopen_chunks(chunks)


def _run_on_cluster(args: argparse.Namespace, request: ModelRequest, images: Any, store: FeatureStore,
                    cfg: ExtractConfig) -> Any:
    from distributed import Client, LocalCluster

    if args.scheduler is not None:
        with Client(args.scheduler) as client:
            return extract_features_distributed(request, images, store, cfg, client=client,
                                                progress=not args.no_progress)
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        return extract_features_distributed(request, images, store, cfg, client=client, progress=not args.no_progress)


def _grids(text: str) -> tuple[int, ...]:
    try:
        grids = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--grid takes comma-separated positive integers like 16,8, got {text!r}")
    if not grids or min(grids) < 1:
        raise argparse.ArgumentTypeError(f"--grid takes comma-separated positive integers like 16,8, got {text!r}")
    return grids
