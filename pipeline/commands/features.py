"""``bddn features``: stage one, a model's features for an image set in a resumable Zarr v3 store."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator

from cache.errors import ConfigError
from cache.lock import hold_lock
from pipeline import runroot
from pipeline.config import build_config, given_flags, load_toml, precision_flag
from pipeline.imagesets.union import ImageFiles, gather_images
from pipeline.stores import update_feature_store
from stages.device import PRECISIONS
from stages.features.extract import ExtractConfig, tune_allocator
from stages.features.token_grids import MAX_GRID
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
    images = parser.add_argument_group("images")
    source = images.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", type=Path, nargs="+", default=None,
                        help="folder(s) of images (PNG/JPEG/...; every image file directly inside each, sorted by "
                             "name); one folder names the store after itself; several make one set (--name), each "
                             "stimulus (stable id, e.g. nsd-00013) extracted once")
    source.add_argument("--imageset", metavar="NAME", default=None,
                        help=f"a named image set under <run root>/imagesets/ (default {runroot.DEFAULT_IMAGESET!r}, "
                             "written by `bddn demo-images`)")
    images.add_argument("--image-list", metavar="FILE", type=Path, action="append", default=None,
                        help="text file naming one image file per line (relative to the file; # comments); "
                             "repeatable, combinable with --images; needs --name")
    images.add_argument("--name", metavar="NAME", default=None,
                        help="name of an image set gathered from several folders or lists; its store is "
                             "<run root>/features/<name>/<model>.zarr. Running again with more images extends the "
                             "store with only the new ones")
    store = parser.add_argument_group("store")
    store.add_argument("--grid", metavar="SIZES", type=_grids, default=None, dest="grids",
                       help=f"comma-separated local-token grid sizes to store, e.g. 16,8, each at most {MAX_GRID} "
                            f"(the finest token grid of any registered model: a finer one only interpolates, "
                            f"while the store grows with its square) (default {','.join(map(str, defaults.grids))})")
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
    """Gather the images, resolve the config, and bring the set's store up to date (``pipeline.stores``)."""
    tune_allocator()
    run_root = runroot.resolve_run_root(args.run_root)
    files, imageset = resolve_images(run_root, args.images, args.image_list, args.imageset, args.name)
    preset = load_toml(args.config).get(_PRESET_TABLE, {}) if args.config else {}
    flags = given_flags(args, ("grids", "dtype", "chunk_images", "antialias", "batch_size", "device", "precision",
                               "decode_workers"))
    cfg = build_config(ExtractConfig, preset, flags, where="features")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    request = ModelRequest(name=args.model, pretrained=not args.random_init, checkpoint=args.checkpoint,
                           reference_preprocessing=args.reference_preprocessing, seed=args.seed)
    path = runroot.feature_store_path(run_root, imageset, args.model)
    with hold_lock(path), _client(args) as client:   # one run per store: a second one refuses (cache.lock)
        update = update_feature_store(path, files, request, cfg, imageset=imageset, verify=args.verify,
                                      overwrite=args.overwrite, client=client, progress=not args.no_progress,
                                      run={"workers": args.workers, "scheduler": args.scheduler})
    done = "features up to date" if not update.chunks_computed else "features done"
    print(f"{done}: {update.summary}; store {update.path}", file=sys.stderr)
    return 0


def resolve_images(run_root: Path, folders: list[Path] | None, lists: list[Path] | None, imageset: str | None,
                   name: str | None) -> tuple[ImageFiles, str]:
    """(images, image-set name) from ``--images``/``--image-list``/``--imageset`` and ``--name``: one folder is
    named after itself, several sources need ``--name``; a named set under the run root is read as a folder."""
    if not folders and not lists:
        if name is not None:
            raise ConfigError("--name names a set gathered from --images or --image-list; --imageset is already named")
        folder, imageset = runroot.image_folder(run_root, None, imageset)
        return gather_images([folder]), imageset
    if imageset is not None:
        raise ConfigError("--imageset names a set under the run root; gather folders or lists with --images, "
                          "--image-list and --name instead")
    if name is None:
        if lists or len(folders) > 1:
            raise ConfigError("several --images folders or an --image-list make one image set: name it with --name "
                              "(its store is <run root>/features/<name>/<model>.zarr)")
        name = folders[0].expanduser().resolve().name
    return gather_images(folders or (), lists or ()), name


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    """A dask.distributed client for --workers / --scheduler, else None (extraction in this process)."""
    if args.workers is None and args.scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if args.scheduler is not None:
        with Client(args.scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def _grids(text: str) -> tuple[int, ...]:
    try:
        grids = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--grid takes comma-separated positive integers like 16,8, got {text!r}")
    if not grids or min(grids) < 1:
        raise argparse.ArgumentTypeError(f"--grid takes comma-separated positive integers like 16,8, got {text!r}")
    return grids
