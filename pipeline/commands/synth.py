"""``bddn synth``: synthetic subjects with a planted answer, in the Algonauts 2023 layout."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from cache.errors import MissingInputError
from cache.store import FeatureStore
from pipeline import runroot
from pipeline.config import build_config, given_flags, load_toml
from pipeline.imagesets.folder import list_image_files, stable_image_id
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.generate import store_statistics, synthesize_subject

NAME = "synth"
HELP = ("synthetic subjects on fsaverage5 with a planted answer (layer hierarchy, retinotopy, receptive-field "
        "size, globality), responses generated from a stage-one feature store, written to "
        "<run root>/synthetic/subjNN in the Algonauts 2023 layout with planted_truth.parquet beside them")
_PRESET_TABLE = "synth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bddn synth``; unset options fall back to the preset, then SyntheticConfig's defaults."""
    defaults = SyntheticConfig()
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 3],
                        help="subject numbers to make (default 1 2 3); each has its own seed and maps")
    parser.add_argument("--model", default=runroot.DEFAULT_MODEL,
                        help=f"model whose feature store generates the responses (default {runroot.DEFAULT_MODEL})")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", type=Path, default=None,
                        help="image folder the store was extracted from (the store is named after the folder)")
    source.add_argument("--imageset", default=None,
                        help=f"named image set under <run root>/imagesets/ (default {runroot.DEFAULT_IMAGESET!r})")
    parser.add_argument("--noise-ceiling", type=float, default=None,
                        help=f"mean target noise ceiling, a fraction 0.02..0.98 of the averaged responses' variance "
                             f"(default {defaults.noise_ceiling}; varies smoothly by +-{defaults.noise_ceiling_spread})")
    parser.add_argument("--vertices", type=int, default=None, dest="vertices_per_hemisphere", metavar="N",
                        help=f"fsaverage5 vertices per hemisphere (default {defaults.vertices_per_hemisphere})")
    parser.add_argument("--seed", type=int, default=0, help="base seed; subject s uses (seed, s) (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace subjects that were made differently")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"TOML preset whose [{_PRESET_TABLE}] table sets any of: "
                             + ", ".join(SyntheticConfig.__dataclass_fields__))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Open the store, map its image ids to files, make each subject, print sizes and noise ceilings."""
    run_root = runroot.resolve_run_root(args.run_root)
    folder, imageset = runroot.image_folder(run_root, args.images, args.imageset)
    preset = load_toml(args.config).get(_PRESET_TABLE, {}) if args.config else {}
    flags = given_flags(args, ("noise_ceiling", "vertices_per_hemisphere"))
    cfg = build_config(SyntheticConfig, preset, flags, where="synth")
    store_path = runroot.feature_store_path(run_root, imageset, args.model)
    if not store_path.exists():
        raise MissingInputError(f"no feature store for model {args.model!r} on image set {imageset!r} at {store_path}; "
                                f"run `bddn features --model {args.model} "
                                f"{'--images ' + str(folder) if args.images else '--imageset ' + imageset}` first")
    store = FeatureStore.open(store_path)
    files = {}
    for path in list_image_files(folder):
        files.setdefault(stable_image_id(path), path)
    root = runroot.synthetic_root(run_root)
    root.mkdir(parents=True, exist_ok=True)
    statistics = functools.cache(lambda: store_statistics(store, cfg, progress=not args.no_progress))
    for subject in args.subjects:
        summary = synthesize_subject(store, files, root, subject, cfg=cfg, seed=args.seed, model=args.model,
                                     overwrite=args.overwrite, statistics=statistics, progress=not args.no_progress)
        rois = ", ".join(f"{name} {count}" for name, count in summary.roi_counts.items())
        state = "up to date" if summary.reused else f"made in {summary.seconds:.1f} s"
        print(f"synth {summary.name}: {state} -> {summary.folder}; {summary.n_vertices} vertices ({rois}); "
              f"noise ceiling target mean {summary.noise_ceiling_target:.3f}, achieved "
              f"{summary.noise_ceiling_achieved:.3f}", file=sys.stderr)
    return 0
