"""``bddn preferred``: rank an image set by each ROI's mean predicted response; top and bottom images per ROI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cache.errors import ConfigError
from pipeline import runroot
from pipeline.commands.predict import (
    add_compute_arguments, add_fit_arguments, add_image_arguments, resolve_fit, resolve_images,
)
from pipeline.insilico import image_files
from pipeline.preferred import roi_means, write_preferred_page

NAME = "preferred"
HELP = ("what each area prefers: predict an image set with a finished fit (as bddn predict does, reusing its "
        "Zarr array), rank the images by each ROI's mean predicted response and write the ranking and a page of "
        "the top and bottom images per ROI to <run root>/figures/preferred/<fit>/<imageset>/")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bddn preferred``: those of ``bddn predict`` plus the number of images shown."""
    add_fit_arguments(parser)
    add_image_arguments(parser)
    parser.add_argument("--top", type=int, default=8, metavar="N",
                        help="images shown at each end of every ROI's ranking (default 8)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder of the ranking and page (default <run root>/figures/preferred/<fit>/<imageset>/)")
    add_compute_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Predict (or reuse the predictions of) the images, average per ROI, rank, write table and page."""
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    fit = resolve_fit(args)
    chosen = resolve_images(args, fit)
    store, ids = fit.image_store(**chosen, device=args.device, progress=not args.no_progress)
    imageset = store.path.parent.name
    predictions_path = runroot.predictions_path(fit.run_root, fit.path, imageset)
    predictions = fit.predict_store(store, ids, out=predictions_path, device=args.device,
                                    block_bytes=int(args.block_mb * 2**20))
    files = {}
    if "store" not in chosen:   # thumbnails need the files; a store alone shows the images by id
        found, _ = image_files(chosen["images"], run_root=fit.run_root)
        files = dict(zip(found.image_ids, found.paths))
    below = predictions_path.relative_to(fit.run_root / "predictions").with_suffix("")
    folder = args.out or runroot.figures_dir(fit.run_root) / "preferred" / below
    page = write_preferred_page(folder, roi_means(predictions), files=files, top=args.top,
                                title=f"{fit.result.subject} ({fit.result.model}, {fit.result.method}): images "
                                      f"preferred by each ROI, {imageset}", units="the fit's response units")
    print(f"bddn preferred: {len(ids)} images ranked for each ROI of {fit.path} -> {page} (predictions "
          f"{predictions_path})", file=sys.stderr)
    return 0
