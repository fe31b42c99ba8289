"""``bddn demo-images``: write the embedded demo image set under the run root."""

from __future__ import annotations

import argparse
import sys

from pipeline import runroot
from pipeline.imagesets import demo as demo_images

NAME = "demo-images"
HELP = ("write the seeded demo image set (variations of the photos inside scikit-image, scikit-learn and "
        "matplotlib) to <run root>/imagesets/demo/demo-00000.png ...; does nothing when it is already there")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bddn demo-images``."""
    parser.add_argument("--count", type=int, default=demo_images.DEFAULT_COUNT,
                        help=f"number of images (default {demo_images.DEFAULT_COUNT})")
    parser.add_argument("--seed", type=int, default=0, help="random seed; image i depends only on (seed, size, i) (default 0)")
    parser.add_argument("--size", type=int, default=demo_images.DEFAULT_SIZE,
                        help=f"side of the square PNGs in pixels (default {demo_images.DEFAULT_SIZE})")
    parser.add_argument("--imageset", default=runroot.DEFAULT_IMAGESET,
                        help=f"image-set name, i.e. the folder under <run root>/imagesets/ (default {runroot.DEFAULT_IMAGESET!r})")


def run(args: argparse.Namespace) -> int:
    """Write (or confirm) the demo set; prints its folder."""
    folder = runroot.imageset_dir(runroot.resolve_run_root(args.run_root), args.imageset)
    result = demo_images.write_demo_images(folder, count=args.count, seed=args.seed, size=args.size)
    state = "written" if result.generated else "already present"
    print(f"demo images {state}: {len(result.files)} PNGs in {result.folder}", file=sys.stderr)
    return 0
