"""``bddn predict``: a finished fit's predicted responses to any images, as a chunked Zarr array (in-silico use)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from cache.errors import ConfigError
from pipeline import runroot
from pipeline.api import LoadedFit, load_fit

NAME = "predict"
HELP = ("predict every fitted vertex's response to any images from a finished fit (FactorTopy, ridge, banded ridge, "
        "each subject of a joint fit): features through "
        "the fit's own store recipe, the fit's own read-out, written to "
        "<run root>/predictions/<fit>/<imageset>.zarr (images x vertices, float32, in the fit's response units)")
DEFAULT_SUBJECT = "subj01"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bddn predict`` (shared with ``bddn preferred``: which fit, which images, where it runs)."""
    add_fit_arguments(parser)
    add_image_arguments(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="Zarr folder to write (default <run root>/predictions/<fit below fits/>/<imageset>.zarr)")
    add_compute_arguments(parser)


def add_fit_arguments(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    """``--fit DIR``, or ``--model``, ``--subject`` and ``--method`` naming a fit under the run root; with
    ``several``, ``--fit`` and ``--subject`` take one or more (``resolve_fits``)."""
    fit = parser.add_argument_group("fit")
    count = {"nargs": "+"} if several else {}
    fit.add_argument("--fit", type=Path, default=None, metavar="DIR", **count,
                     help="fit folder(s) (holding fit.json and weights.safetensors or coefficients.safetensors); "
                          "default <run root>/fits/<model>/<subject>/")
    fit.add_argument("--model", default=runroot.DEFAULT_MODEL,
                     help=f"the fit's model, when --fit is not given (default {runroot.DEFAULT_MODEL})")
    fit.add_argument("--subject", default=[DEFAULT_SUBJECT] if several else DEFAULT_SUBJECT, **count,
                     help=f"the fit's subject(s), when --fit is not given (default {DEFAULT_SUBJECT})")
    fit.add_argument("--method", default="factortopy", choices=("factortopy", "ridge", "banded-ridge"),
                     help="the fit's method, when --fit is not given (default factortopy)")


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the images come from: files and folders, a named image set, or an existing feature store."""
    images = parser.add_argument_group("images")
    source = images.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, nargs="+", default=None, metavar="PATH",
                        help="image folder(s), image files or image lists (.txt, one path per line); extracted with "
                             "the fit's model, preprocessing and grid into <run root>/features/<imageset>/ (a store "
                             "that already holds them is reused)")
    source.add_argument("--imageset", default=None, metavar="NAME",
                        help="a named image set under <run root>/imagesets/ (e.g. one written by bddn demo-images)")
    source.add_argument("--store", type=Path, default=None, metavar="ZARR",
                        help="an existing feature store of the images; refused when its model id or recipe differs "
                             "from the fit's store, or a chunk is damaged")
    images.add_argument("--name", default=None,
                        help="name of the image set (its store is <run root>/features/<name>/<model>.zarr; default "
                             "the folder's name, or a digest of the files)")


def add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    """Device, memory budget and progress."""
    compute = parser.add_argument_group("compute")
    compute.add_argument("--device", default=None,
                         help="where extraction and the read-out run: auto (CUDA when available), cpu, cuda, cuda:N "
                              "(default: the fit's setting, auto)")
    compute.add_argument("--block-mb", type=float, default=256.0, metavar="MB",
                         help="host memory for one block of predictions (images x vertices beyond it is never "
                              "held; default 256)")
    compute.add_argument("--no-progress", action="store_true", help="no progress bar while extracting")


def resolve_fits(args: argparse.Namespace) -> list[LoadedFit]:
    """The fits named by ``--fit`` or by ``--model``, ``--subject`` and ``--method`` under the run root."""
    run_root = runroot.resolve_run_root(args.run_root)
    if args.fit is not None:
        folders = args.fit if isinstance(args.fit, list) else [args.fit]
    else:
        subjects = args.subject if isinstance(args.subject, list) else [args.subject]
        folders = [runroot.fit_dir(run_root, args.model, subject, args.method) for subject in subjects]
    return [load_fit(folder, run_root=run_root) for folder in folders]


def resolve_fit(args: argparse.Namespace) -> LoadedFit:
    """The one fit named by ``--fit`` or by ``--model``, ``--subject`` and ``--method`` under the run root."""
    return resolve_fits(args)[0]


def resolve_images(args: argparse.Namespace, fit: LoadedFit) -> dict[str, Any]:
    """The ``images`` / ``store`` / ``name`` arguments of :meth:`LoadedFit.image_store` from the flags."""
    if args.block_mb <= 0 or args.block_mb != args.block_mb:
        raise ConfigError(f"--block-mb must be a positive number of megabytes, got {args.block_mb}")
    if args.imageset is not None:
        folder, name = runroot.image_folder(fit.run_root, None, args.imageset)
        return {"images": folder, "name": args.name or name}
    if args.store is not None:
        if args.name is not None:
            raise ConfigError("--name names an image set extracted from --images or --imageset; --store is one already")
        return {"store": args.store}
    return {"images": [str(path) for path in args.images], "name": args.name}


def run(args: argparse.Namespace) -> int:
    """Load the fit, bring the images' store up to date with the fit's recipe, predict, write the Zarr array."""
    fit = resolve_fit(args)
    started = time.perf_counter()
    store, ids = fit.image_store(**resolve_images(args, fit), device=args.device, progress=not args.no_progress)
    extracted = time.perf_counter()
    out = args.out or runroot.predictions_path(fit.run_root, fit.path, store.path.parent.name)
    predictions = fit.predict_store(store, ids, out=out, device=args.device,
                                    block_bytes=int(args.block_mb * 2**20))
    seconds = time.perf_counter() - extracted
    print(f"bddn predict: {predictions.sizes['image']} images x {predictions.sizes['vertex']} vertices of "
          f"{fit.path} -> {out} (features {extracted - started:.1f} s, read-out {seconds:.1f} s, "
          f"{predictions.sizes['image'] / max(seconds, 1e-9):.0f} images/s on {predictions.attrs['device']}); "
          f"values are in {predictions.attrs['units']}", file=sys.stderr)
    return 0
