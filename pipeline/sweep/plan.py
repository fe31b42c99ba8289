"""A sweep's plan: one store task per model over the subjects' image set, one fit task per model x subject x
method (one per model for ``joint``), each as the exact ``bddn`` command a user would type.

Because every task *is* a ``bddn features`` or ``bddn fit`` command line (run in a worker
by the same code as on the command line), a sweep produces the same stores and fits as
those commands run one after another, and a failed task's rerun command is that line.

Image set: by default the union of the subjects' own image folders
(``pipeline.subjects.locate``), named after the data kind (``--name`` changes it), so
a stimulus several subjects saw is extracted once and a subject added later extends the
store with only its new images. ``--images``/``--image-list`` or ``--imageset`` give the
set explicitly (NSD, whose stimuli are not per-subject files, needs one of them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cache.errors import ConfigError
from pipeline import runroot
from pipeline.subjects.assemble import subject_label
from pipeline.subjects.locate import subject_image_folders

#: Methods a sweep fits: the fit command's methods, plus ``joint`` (FactorTopy over all subjects at once).
SWEEP_METHODS = ("factortopy", "ridge", "banded-ridge", "joint")
#: The default grid's networks: the three real networks that run offline (two CNNs of 19 and 17 layers, a
#: 12-block vision transformer), compared in relative depth by the sweep's report.
DEFAULT_MODELS = ("mobilenet_v2", "efficientnet_lite0", "dinov2_small_imgfocus")
#: The default grid's methods: FactorTopy and its ridge baseline on the same splits.
DEFAULT_METHODS = ("factortopy", "ridge")
#: Training epochs of a sweep's FactorTopy fits (``factortopy`` and ``joint``), as in ``bddn demo``: the layer
#: choice is the warm start's and stays fixed (``layer_lr = 0``), so the relative-depth maps the sweep compares
#: do not depend on epochs; more epochs refine R^2, space and scale (validation R^2 0.302 after 8, 0.311 after 10
#: on the demo subject), at 5-7 s per epoch of a demo fit on 2 cores.
DEFAULT_EPOCHS = 8
#: Methods trained in epochs.
TRAINED_METHODS = ("factortopy", "joint")


@dataclass(frozen=True)
class SweepRequest:
    """What the user asked for, resolved.

    Attributes:
        name: the sweep's name (its folder ``<run root>/sweeps/<name>``).
        run_root: the run root every task writes under.
        models, subjects, methods: the grid (subjects as given: ``1`` or ``subj01`` or a name).
        data, root: the subjects' data kind and folder (None: the run root, for synthetic subjects).
        imageset: name of the image set (and of its stores' folder).
        images, image_lists: explicit image sources; empty: the subjects' own folders.
        named_imageset: True when ``imageset`` names an existing set under the run root (``--imageset``).
        epochs: training epochs of the FactorTopy fits (``factortopy``, ``joint``); None: ``bddn fit``'s default.
        feature_args, fit_args: extra flags passed to every ``bddn features`` / ``bddn fit`` (after ``--epochs``,
            so a ``--epochs`` there wins).
    """

    name: str
    run_root: Path
    models: tuple[str, ...]
    subjects: tuple[str, ...]
    methods: tuple[str, ...]
    data: str = "synthetic"
    root: Path | None = None
    imageset: str = ""
    images: tuple[Path, ...] = ()
    image_lists: tuple[Path, ...] = ()
    named_imageset: bool = False
    epochs: int | None = None
    feature_args: tuple[str, ...] = ()
    fit_args: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for label, values in (("--models", self.models), ("--subjects", self.subjects), ("--methods", self.methods)):
            if not values:
                raise ConfigError(f"a sweep needs at least one value for {label}")
            if len(set(values)) != len(values):
                raise ConfigError(f"{label} repeats a value: {list(values)}")
        unknown = sorted(set(self.methods) - set(SWEEP_METHODS))
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; a sweep fits {', '.join(SWEEP_METHODS)}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if "joint" in self.methods and len(self.subjects) < 2:
            raise ConfigError("--methods joint fits two or more subjects together; give --subjects with at least two")


@dataclass(frozen=True)
class Task:
    """One unit of a sweep.

    Attributes:
        key: unique name, e.g. ``store/mobilenet_v2``, ``fit/mobilenet_v2/subj01/ridge``.
        kind: ``"store"`` or ``"fit"``.
        model: the model.
        subjects: the subject names the task fits (empty for a store).
        method: the fit method (``"joint"`` for a joint fit; empty for a store).
        argv: the ``bddn`` command line (global options first), without ``--no-progress``.
        outputs: the fit folders it writes (a store task: the store).
        depends: the key of the task it needs finished first (a fit's store), or None.
    """

    key: str
    kind: str
    model: str
    subjects: tuple[str, ...]
    method: str
    argv: tuple[str, ...]
    outputs: tuple[Path, ...]
    depends: str | None = None

    @property
    def command(self) -> str:
        """The task as a shell command line."""
        import shlex

        return "bddn " + " ".join(shlex.quote(part) for part in self.argv)


def image_sources(request: SweepRequest) -> tuple[list[Path], list[Path]]:
    """(folders, image lists) of the sweep's image set: explicit ones, else every subject's image folders."""
    if request.images or request.image_lists or request.named_imageset:
        return list(request.images), list(request.image_lists)
    root = data_root(request)
    folders: list[Path] = []
    for subject in request.subjects:
        folders += [folder for folder in subject_image_folders(request.data, subject, root) if folder not in folders]
    return folders, []


def data_root(request: SweepRequest) -> Path:
    """The subjects' data folder (the run root for synthetic subjects)."""
    if request.root is not None:
        return request.root
    if request.data == "synthetic":
        return request.run_root
    raise ConfigError(f"--data {request.data} needs --root: the folder holding the subject data")


def plan_tasks(request: SweepRequest, folders: Sequence[Path], lists: Sequence[Path]) -> list[Task]:
    """Every task of the sweep, stores first, in a stable order."""
    base = ("--run-root", str(request.run_root))
    if request.named_imageset:
        source = ("--imageset", request.imageset)
    else:
        source = (*(("--images", *map(str, folders)) if folders else ()),
                  *(part for listed in lists for part in ("--image-list", str(listed))), "--name", request.imageset)
    tasks = []
    for model in request.models:
        store = runroot.feature_store_path(request.run_root, request.imageset, model)
        tasks.append(Task(f"store/{model}", "store", model, (), "", (*base, "features", "--model", model, *source,
                                                                      *request.feature_args), (store,)))
    root = ("--root", str(request.root)) if request.root is not None else ()
    names = [subject_label(subject) for subject in request.subjects]
    for model in request.models:
        common = (*base, "fit", "--model", model, "--imageset", request.imageset, "--data", request.data, *root)
        for method in request.methods:
            epochs = ("--epochs", str(request.epochs)) if request.epochs and method in TRAINED_METHODS else ()
            if method == "joint":
                outputs = tuple(runroot.joint_fit_dir(request.run_root, model, names, name) for name in names)
                tasks.append(Task(f"fit/{model}/{'+'.join(names)}/joint", "fit", model, tuple(names), "joint",
                                  (*common, "--subjects", *request.subjects, *epochs, *request.fit_args), outputs,
                                  f"store/{model}"))
                continue
            for subject, name in zip(request.subjects, names):
                tasks.append(Task(f"fit/{model}/{name}/{method}", "fit", model, (name,), method,
                                  (*common, "--subject", subject, "--method", method, *epochs, *request.fit_args),
                                  (runroot.fit_dir(request.run_root, model, name, method),), f"store/{model}"))
    return tasks


def sweep_dir(run_root: Path, name: str) -> Path:
    """``<run root>/sweeps/<name>/``: the sweep's table, logs and report."""
    return run_root / "sweeps" / runroot.safe_name(name)
