"""``bddn fit``: stage two, fit one subject's responses from a feature store (FactorTopy or ridge baselines),
or several subjects jointly (``--subjects``: FactorTopy with shared selectors, one read-out each)."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from cache.errors import ConfigError, MissingInputError
from cache.lock import hold_lock
from cache.store import FeatureStore
from pipeline import runroot
from pipeline.config import build_config, given_flags, load_toml, precision_flag
from pipeline.publish import check_finite_scores, publish
from pipeline.stores import check_subject_images
from pipeline.subjects import list_subject_readers, load_subject
from pipeline.surfaces import mesh_neighbours, shared_sphere_coordinates
from stages.device import PRECISIONS
from stages.fit.config import REFERENCE_PRESET, FitConfig
from stages.fit.multisubject import fit_factortopy_multi
from stages.fit.ridge import RidgeConfig, fit_ridge
from stages.fit.result import FitResult
from stages.fit.train import fit_factortopy
from stages.resources import PhaseMonitor
from stages.subject import Subject

NAME = "fit"
HELP = ("stage two: fit a subject's responses from a model's feature store and write "
        "<run root>/fits/<model>/<subject>[-<method>]/ (per-vertex table, weights, metrics); with --subjects, fit "
        "several subjects jointly (shared selectors, one read-out each) into "
        "<run root>/fits/<model>/<subjA+subjB+...>/<subject>/")
METHODS = ("factortopy", "ridge", "banded-ridge")
#: Flags that set FitConfig keys (argparse destinations; dotted ones set nested keys).
FIT_FLAGS = ("epochs", "batch_size", "lr", "selector_lr", "layer_lr", "patience", "layers", "warm_start",
             "model.scale_mode", "smoothness_weight", "seed", "device", "precision", "resident", "layer_resamples",
             "layer_model_error")
#: Flags that set RidgeConfig keys.
RIDGE_FLAGS = ("layers", "seed", "device", "layer_resamples", "layer_model_error")
CHECKPOINT_FOLDER = "checkpoint"
DEFAULT_SUBJECT = "1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bddn fit``; unset options fall back to the preset, then the config defaults."""
    defaults = FitConfig()
    data = parser.add_argument_group("data")
    who = data.add_mutually_exclusive_group()
    who.add_argument("--subject", default=None, help="subject number (1 -> subj01) or name (default 1)")
    who.add_argument("--subjects", nargs="+", default=None, metavar="SUBJECT",
                     help="two or more subjects fitted jointly (FactorTopy only): shared bottlenecks and selectors, "
                          "one read-out per subject (the paper's subject-average map), one image set for all; "
                          "each subject's fit goes to <run root>/fits/<model>/<subjA+subjB+...>/<subject>/")
    data.add_argument("--data", default="synthetic", choices=[reader.name for reader in list_subject_readers()],
                      help="kind of subject data (default synthetic: the subjects written by `bddn synth`)")
    data.add_argument("--root", type=Path, default=None,
                      help="data folder: " + "; ".join(f"{r.name}: {r.root_help}" for r in list_subject_readers())
                           + " (default for synthetic: the run root)")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the train/val(/test) split (default 0)")
    data.add_argument("--val-fraction", type=float, default=0.1, help="share of non-test images for validation")
    data.add_argument("--model", default=runroot.DEFAULT_MODEL,
                      help=f"model whose feature store to fit from (default {runroot.DEFAULT_MODEL})")
    data.add_argument("--imageset", default=runroot.DEFAULT_IMAGESET,
                      help=f"image set of that store: <run root>/features/<imageset>/<model>.zarr "
                           f"(default {runroot.DEFAULT_IMAGESET!r})")
    method = parser.add_argument_group("method")
    method.add_argument("--method", choices=METHODS, default="factortopy",
                        help="factortopy (default), ridge (per-layer ridge, best layer per vertex) or banded-ridge")
    method.add_argument("--reference", action="store_true",
                        help="the published reference's constants (batch 8, prior fading by step 2000, one learning "
                             "rate, no warm start, ...) instead of the improved defaults")
    method.add_argument("--config", type=Path, default=None,
                        help="TOML preset: a [fit] table sets FitConfig keys (nested [fit.model] for the "
                             "architecture), a [ridge] table RidgeConfig keys")
    train = parser.add_argument_group("training (factortopy)")
    train.add_argument("--epochs", type=int, default=None, help=f"maximum epochs (default {defaults.epochs})")
    train.add_argument("--batch-size", type=int, default=None, help=f"images per step (default {defaults.batch_size})")
    train.add_argument("--lr", type=float, default=None, help=f"read-out learning rate (default {defaults.lr})")
    train.add_argument("--selector-lr", type=float, default=None,
                       help=f"selector learning rate (default {defaults.selector_lr})")
    train.add_argument("--layer-lr", type=float, default=None,
                       help=f"layer selector learning rate; 0 keeps the warm start (default {defaults.layer_lr})")
    train.add_argument("--patience", type=int, default=None,
                       help=f"epochs without a better validation R^2 before stopping (default {defaults.patience})")
    train.add_argument("--layers", type=_names, default=None, help="comma-separated store layer names (default all)")
    train.add_argument("--warm-start", choices=("none", "layer", "layer+space"), default=None,
                       help="initialise the layer selector from per-layer ridge scores (layer), and the space "
                            f"selector from per-cell scores (layer+space) (default {defaults.warm_start})")
    train.add_argument("--scale-mode", choices=("mix", "pyramid"), default=None, dest="model.scale_mode",
                       help="local/global mix (reference) or receptive-field size over a pooled pyramid")
    train.add_argument("--smoothness", type=float, default=None, dest="smoothness_weight",
                       help="weight of the selector smoothness penalty over mesh neighbours (default 0 = off)")
    train.add_argument("--layer-resamples", type=int, default=None, metavar="B",
                       help="bootstrap replicates behind each vertex's 90 %% layer set and layer confidence "
                            "(FactorTopy with a warm start, and ridge); 0 = none (default 100)")
    train.add_argument("--layer-model-error", type=float, default=None, metavar="W",
                       help="widen each layer set by W x the best layer's error above the noise floor, for a "
                            "network that is not the brain's; needs a noise ceiling; 0 = resampling noise only "
                            f"(default {defaults.layer_model_error:g})")
    train.add_argument("--seed", type=int, default=None, help="seed of initialisation and batch order (default 0)")
    compute = parser.add_argument_group("compute")
    compute.add_argument("--device", default=None,
                         help="auto (CUDA when available), cpu, cuda, cuda:N; training, warm start and ridge run there")
    compute.add_argument("--precision", type=precision_flag, metavar="{" + ",".join(PRECISIONS) + "}", default=None,
                         help="autocast (default auto: bf16 on CUDA when supported, fp32 on the CPU); bf16 also "
                              "applies on the CPU (a step ~30%% faster with AMX)")
    residency = compute.add_mutually_exclusive_group()
    residency.add_argument("--resident", dest="resident", action="store_const", const="on", default=None,
                           help="hold all features on the device (default: automatic by size)")
    residency.add_argument("--stream", dest="resident", action="store_const", const="off",
                           help="stream features from the store with bounded host memory")
    parser.add_argument("--restart", action="store_true", help="discard an interrupted fit's checkpoint and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Resolve the fit's config, load the subject(s) and the store, fit, write the fit folder(s)."""
    run_root = runroot.resolve_run_root(args.run_root)
    cfg = resolve_config(args)
    data_root = args.root or (run_root if args.data == "synthetic" else None)
    if data_root is None:
        raise MissingInputError(f"--data {args.data} needs --root: the folder holding the subject data")
    if args.subjects is not None:
        return run_joint(args, cfg, run_root, data_root)
    with PhaseMonitor() as monitor:
        with monitor.phase("read_subject"):
            subject = _load_subject(args, args.subject or DEFAULT_SUBJECT, data_root)
        store = _open_store(args, run_root)
        check_subject_images(store, data=args.data, subject=_subject_key(args.subject or DEFAULT_SUBJECT),
                             root=data_root)
        out = runroot.fit_dir(run_root, args.model, subject.name, args.method)
        started = time.perf_counter()
        with hold_lock(out):   # one run per fit: a second one refuses (cache.lock)
            if isinstance(cfg, FitConfig):
                checkpoint = _checkpoint_folder(out, restart=args.restart)
                result = fit_factortopy(store, subject, cfg, checkpoint_dir=checkpoint,
                                        progress=not args.no_progress, neighbours=_neighbours(cfg, subject),
                                        monitor=monitor)
            else:
                result = fit_ridge(store, subject, cfg)
            check_finite_scores(result.metrics, what=f"fit of {subject.name} on {args.model}")
            publish(out, run_root, result.save)   # the previous fit (and the finished checkpoint) go only now
    _print_done(result, args.model, out, time.perf_counter() - started)
    return 0


def run_joint(args: argparse.Namespace, cfg: FitConfig | RidgeConfig, run_root: Path, data_root: Path) -> int:
    """``--subjects``: one FactorTopy model for every listed subject; each subject's fit is written to
    ``<run root>/fits/<model>/<subjA+subjB+...>/<subject>/``."""
    if not isinstance(cfg, FitConfig):
        raise ConfigError(f"--subjects fits FactorTopy jointly; --method {args.method} fits one subject at a time: "
                          "use --subject")
    if len(args.subjects) < 2:
        raise ConfigError(f"--subjects needs two or more subjects, got {args.subjects}; use --subject for one")
    subjects = shared_sphere_coordinates([_load_subject(args, key, data_root) for key in args.subjects])
    store = _open_store(args, run_root)
    for key in args.subjects:
        check_subject_images(store, data=args.data, subject=_subject_key(key), root=data_root)
    names = [subject.name for subject in subjects]
    group = runroot.joint_fit_dir(run_root, args.model, names)
    started = time.perf_counter()
    with hold_lock(group):   # one run per joint fit: a second one refuses (cache.lock)
        checkpoint = _checkpoint_folder(group, restart=args.restart)
        results = fit_factortopy_multi(store, subjects, cfg, checkpoint_dir=checkpoint, progress=not args.no_progress,
                                       neighbours=[_neighbours(cfg, subject) for subject in subjects])
        for result in results:
            check_finite_scores(result.metrics, what=f"joint fit of {result.subject} on {args.model}")
        for result in results:
            publish(runroot.joint_fit_dir(run_root, args.model, names, result.subject), run_root, result.save)
        shutil.rmtree(checkpoint, ignore_errors=True)
    seconds = time.perf_counter() - started
    for result in results:
        _print_done(result, args.model, runroot.joint_fit_dir(run_root, args.model, names, result.subject), seconds)
    return 0


def resolve_config(args: argparse.Namespace) -> FitConfig | RidgeConfig:
    """The fit's one config, built once: the method's defaults, the reference preset (``--reference``), the TOML
    preset's ``[fit]`` or ``[ridge]`` table, then the flags the user gave, merged in one step."""
    preset = load_toml(args.config) if args.config else {}
    if args.method == "factortopy":
        return build_config(FitConfig, REFERENCE_PRESET if args.reference else None, preset.get("fit"),
                            given_flags(args, FIT_FLAGS), where="fit config")
    if args.reference:
        raise ConfigError(f"--reference selects the published FactorTopy constants; --method {args.method} has none")
    return build_config(RidgeConfig, {"method": args.method}, preset.get("ridge"), given_flags(args, RIDGE_FLAGS),
                        where="ridge config")


def _load_subject(args: argparse.Namespace, key: str, data_root: Path) -> Subject:
    return load_subject(args.data, _subject_key(key), root=data_root, split_seed=args.split_seed,
                        val_fraction=args.val_fraction)


def _open_store(args: argparse.Namespace, run_root: Path) -> FeatureStore:
    store_path = runroot.feature_store_path(run_root, args.imageset, args.model)
    if not store_path.exists():
        raise MissingInputError(f"no feature store for model {args.model!r} and image set {args.imageset!r} at "
                                f"{store_path}; run `bddn features --model {args.model} --imageset {args.imageset}` first")
    return FeatureStore.open(store_path)


def _checkpoint_folder(fit_folder: Path, *, restart: bool) -> Path:
    """The fit's checkpoint folder, emptied first with ``--restart``."""
    checkpoint = fit_folder / CHECKPOINT_FOLDER
    if restart:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return checkpoint


def _neighbours(cfg: FitConfig, subject: Subject) -> np.ndarray | None:
    """Mesh neighbour pairs of the subject's vertices when the smoothness penalty is on."""
    if cfg.smoothness_weight <= 0:
        return None
    return mesh_neighbours(subject.hemisphere, subject.fsaverage_index)


def _print_done(result: FitResult, model: str, out: Path, seconds: float) -> None:
    scores = ", ".join(f"{key} {value:.3f}" for key, value in result.metrics.items()
                       if key in ("mean_r2_val", "mean_r2_test", "median_r2_test_nc") and value == value)
    print(f"bddn fit: {result.method} fit of {result.subject} on {model} in {seconds:.0f} s ({scores}) -> {out}")
    for source in result.metrics.get("feature_source", []):
        print(f"bddn fit: training features {source}")
    phases = result.metrics.get("phases", {})
    if phases:
        print("bddn fit: phases " + ", ".join(f"{name} {entry['seconds']:.0f} s / {entry['peak_rss_gb']:.1f} GB"
                                             for name, entry in phases.items()))


def _subject_key(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())
