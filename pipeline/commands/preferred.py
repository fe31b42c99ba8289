"""``bddn preferred``: rank an image set by each ROI's (and channel cluster's) mean predicted response; top and
bottom images of each; one fit, or the subject average of several."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cache.errors import ConfigError
from pipeline import runroot
from pipeline.api import LoadedFit
from pipeline.commands.predict import (
    add_compute_arguments, add_fit_arguments, add_image_arguments, resolve_fits, resolve_images,
)
from pipeline.insilico import image_files
from pipeline.preferred import channel_clusters, cluster_means, roi_means, subject_average, write_preferred_page

NAME = "preferred"
HELP = ("what each area prefers: predict an image set with a finished fit (as bddn predict does, reusing its "
        "Zarr array), rank the images by each ROI's and each channel cluster's mean predicted response and write "
        "the rankings and a page of the top and bottom images to <run root>/figures/preferred/<fit>/<imageset>/; "
        "several fits (--fit A B C or --subject subj01 subj02 subj03) rank by the subject average of each ROI's "
        "mean")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bddn predict`` (with one or more fits) plus the number of images shown."""
    add_fit_arguments(parser, several=True)
    add_image_arguments(parser)
    parser.add_argument("--top", type=int, default=8, metavar="N",
                        help="images shown at each end of every ROI's ranking (default 8)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder of the ranking and page (default <run root>/figures/preferred/<fit>/<imageset>/)")
    add_compute_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Predict (or reuse the predictions of) the images with each fit, average per ROI (then over subjects),
    rank, write tables and page."""
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    fits = resolve_fits(args)
    per_subject, clusters, sizes, paths = [], None, None, []
    for fit in fits:
        chosen = resolve_images(args, fit)
        store, ids = fit.image_store(**chosen, device=args.device, progress=not args.no_progress)
        imageset = store.path.parent.name
        predictions_path = runroot.predictions_path(fit.run_root, fit.path, imageset)
        predictions = fit.predict_store(store, ids, out=predictions_path, device=args.device,
                                        block_bytes=int(args.block_mb * 2**20))
        per_subject.append(roi_means(predictions))
        paths.append(predictions_path)
        if len(fits) == 1:
            labels = channel_clusters(fit.path, fit.result.n_vertices)
            if labels is not None:
                clusters = cluster_means(predictions, labels)
                sizes = {name: int((labels == name).sum()) for name in clusters.columns}
    files = {}
    if "store" not in chosen:   # thumbnails need the files; a store alone shows the images by id
        found, _ = image_files(chosen["images"], run_root=fits[0].run_root)
        files = dict(zip(found.image_ids, found.paths))
    page = write_preferred_page(_folder(args, fits, paths[0]), subject_average(per_subject), files=files,
                                top=args.top, title=_title(fits, imageset), units="the fit's response units",
                                clusters=clusters, cluster_sizes=sizes, note=_note(fits, clusters is not None))
    print(f"bddn preferred: {len(ids)} images ranked for each ROI of {', '.join(str(f.path) for f in fits)} -> "
          f"{page} (predictions {', '.join(map(str, paths))})", file=sys.stderr)
    return 0


def _folder(args: argparse.Namespace, fits: list[LoadedFit], predictions_path: Path) -> Path:
    """``--out``, or ``<run root>/figures/preferred/<fit below fits/>/<imageset>``; several fits:
    ``.../<first fit's folder above>/<fitA+fitB+...>/<imageset>``."""
    if args.out is not None:
        return args.out
    below = predictions_path.relative_to(fits[0].run_root / "predictions").with_suffix("")
    if len(fits) > 1:
        below = below.parent.parent / "+".join(runroot.safe_name(fit.path.name) for fit in fits) / below.name
    return runroot.figures_dir(fits[0].run_root) / "preferred" / below


def _title(fits: list[LoadedFit], imageset: str) -> str:
    if len(fits) == 1:
        fit = fits[0].result
        return f"{fit.subject} ({fit.model}, {fit.method}): images preferred by each ROI, {imageset}"
    subjects = ", ".join(f"{fit.result.subject} ({fit.result.model}, {fit.result.method})" for fit in fits)
    return f"Subject average of {subjects}: images preferred by each ROI, {imageset}"


def _note(fits: list[LoadedFit], clustered: bool) -> str:
    """What the page's numbers are: the subject average, and why channel clusters are absent."""
    if len(fits) > 1:
        return (f"Each value is the average over these {len(fits)} subjects of the subject's own ROI mean (the ROIs "
                "every subject has); channel clusters are each fit's own and are not averaged: rank one fit for them.")
    if not clustered:
        return ("No channel clusters: the fit has no FactorTopy read-out to cluster (a ridge read-out has no shared "
                "channel space), or too few vertices for 20 clusters.")
    return ""
