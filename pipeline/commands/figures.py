"""``bddn figures``: stage three, every map, table, export and the HTML report of the run root."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cache.errors import InvalidInputError, MissingInputError
from pipeline import runroot
from pipeline.config import build_config, given_flags, load_toml
from pipeline.imagesets.folder import list_image_files
from pipeline.publish import publish_entries
from pipeline.report.inputs import discover_inputs, load_report_meshes
from pipeline.report.output import PARALLEL_MIN_FITS, figure_workers, write_report
from stages.report.config import FORMATS, ReportConfig

NAME = "figures"
HELP = ("stage three: flatmaps, inflated views, ROI summaries, hierarchy scores, GIfTI exports, an interactive "
        "viewer page per fit (viewer.html) and <run root>/figures/index.html for the given fits (default: every fit and planted truth under the run root)")
_PRESET_TABLE = "figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``bddn figures`` and ``bddn compare``; unset options fall back to the preset, then defaults."""
    defaults = ReportConfig()
    parser.add_argument("fits", nargs="*", type=Path, metavar="FIT",
                        help="fit folders (runs/fits/<model>/<subject>/) or synthetic subject folders / "
                             "planted_truth.parquet files (default: all fits and planted truths under the run root)")
    parser.add_argument("--formats", type=parse_list, default=None,
                        help=f"comma-separated figure formats starting with png, from {', '.join(FORMATS)} "
                             f"(default {','.join(defaults.formats)})")
    parser.add_argument("--dpi", type=int, default=None, help=f"PNG resolution (default {defaults.dpi})")
    parser.add_argument("--resolution", type=int, default=None,
                        help=f"raster pixels across one flatmap (default {defaults.resolution})")
    parser.add_argument("--no-crop", dest="crop", action="store_const", const=False, default=None,
                        help="draw whole flat sheets instead of zooming onto each fit's vertices")
    add_space_extent_argument(parser)
    add_alpha_argument(parser)
    add_viewer_arguments(parser)
    parser.add_argument("--inflated-maps", type=parse_list, default=None,
                        help=f"maps also drawn on inflated surfaces (default {','.join(defaults.inflated_maps)})")
    parser.add_argument("--top-channels", type=Path, default=None, metavar="IMAGES",
                        help="folder of images: for each FactorTopy fit, a figure per image with each ROI's top "
                             "channels (loads the fit's feature model)")
    parser.add_argument("--subjects-dir", type=Path, default=None,
                        help="FreeSurfer subjects folder holding larger fsaverage meshes (default $SUBJECTS_DIR; "
                             "fsaverage5 is bundled)")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"TOML preset whose [{_PRESET_TABLE}] table sets any of: "
                             + ", ".join(ReportConfig.__dataclass_fields__))
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes rendering fits side by side (default: one per core and per 2 GB of "
                             f"available memory, and one for fewer than {PARALLEL_MIN_FITS} fits)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_space_extent_argument(parser: argparse.ArgumentParser) -> None:
    """``--space-extent``, shared by ``bddn figures`` and ``bddn compare``."""
    parser.add_argument("--space-extent", type=float, default=None, metavar="E",
                        help="half-width of the image region (1 = whole image) the space maps' colour square spans "
                             "(default: chosen from the fits drawn together, the 90th percentile of their points' distance from the centre)")


def add_viewer_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-viewer`` and ``--viewer-full-resolution``, shared by ``bddn figures`` and ``bddn compare``."""
    parser.add_argument("--no-viewer", dest="viewer", action="store_const", const=False, default=None,
                        help="skip the interactive viewer pages (viewer.html)")
    parser.add_argument("--viewer-full-resolution", dest="viewer_full_resolution", action="store_const", const=True,
                        default=None, help="draw the viewer pages on the fits' own fsaverage order instead of "
                                           "fsaverage5 (pages of tens of MB for fsaverage7 fits)")


def add_alpha_argument(parser: argparse.ArgumentParser) -> None:
    """``--alpha``, shared by ``bddn figures`` and ``bddn compare``."""
    parser.add_argument("--alpha", type=float, default=None, metavar="Q",
                        help="false discovery rate in (0, 1): maps, ROI tables and hierarchy scores keep only vertices "
                             "whose test prediction is significant at it (q_value <= Q); default: every vertex")


def build_report_config(args: argparse.Namespace) -> ReportConfig:
    """The resolved :class:`ReportConfig`: defaults, then the preset's table, then flags."""
    preset = load_toml(args.config).get(_PRESET_TABLE, {}) if args.config else {}
    flags = given_flags(args, ("formats", "dpi", "resolution", "crop", "inflated_maps", "space_extent", "alpha",
                               "viewer", "viewer_full_resolution"))
    return build_config(ReportConfig, preset, flags, where=f"{args.config or 'flags'}")


def run(args: argparse.Namespace) -> int:
    """Find the inputs, load the meshes, render everything, write the page."""
    if args.workers is not None and args.workers < 1:
        raise InvalidInputError(f"--workers {args.workers}: must be at least 1")
    run_root = runroot.resolve_run_root(args.run_root)
    cfg = build_report_config(args)
    inputs = discover_inputs(run_root, args.fits)
    if not inputs:
        raise MissingInputError(f"no fits under {run_root / 'fits'} and no planted truths under "
                                f"{runroot.synthetic_root(run_root)}; run `bddn fit` or `bddn synth` first "
                                "(or `make demo`), or name fit folders")
    flat, inflated = load_report_meshes(inputs, subjects_dir=args.subjects_dir)
    command = "bddn --run-root " + str(run_root) + " figures " + " ".join(str(p) for p in args.fits)
    images = list_image_files(args.top_channels) if args.top_channels else []
    workers = figure_workers(len(inputs)) if args.workers is None else args.workers
    # written aside and swapped in only when complete: a failed run leaves the previous report as it was
    page = publish_entries(runroot.figures_dir(run_root), run_root, lambda staged: write_report(
        staged, inputs, flat, inflated, cfg, progress=not args.no_progress, reproduce=[command.strip()],
        images=images, workers=workers), last="index.html")
    print(f"report: {page}", file=sys.stderr)
    return 0


def parse_list(text: str) -> tuple[str, ...]:
    """A comma-separated flag value as a tuple of non-empty, stripped items."""
    return tuple(item.strip() for item in text.split(",") if item.strip())
