"""``bddn sweep``: many models x many subjects (x methods) as one resumable job on dask.distributed."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path

from cache.errors import BddnError, ConfigError
from pipeline import runroot
from pipeline.subjects import list_subject_readers
from pipeline.subjects.assemble import subject_label
from pipeline.subjects.locate import subject_image_folders
from pipeline.sweep.execute import default_workers, open_client, printer, submit_tasks, uses_gpu
from pipeline.sweep.identity import is_up_to_date
from pipeline.sweep.plan import DEFAULT_EPOCHS, DEFAULT_METHODS, DEFAULT_MODELS, SWEEP_METHODS, SweepRequest, Task, data_root, plan_tasks, sweep_dir
from pipeline.sweep.report import write_sweep_report
from pipeline.sweep.table import build_table, write_table
from pipeline.sweep.tasks import TaskContext, base_row, task_identity

NAME = "sweep"
HELP = ("many models x subjects x methods as one resumable job on dask.distributed: one feature store per model "
        "over the union of the subjects' images, one fit per model x subject x method, then the comparison; "
        "finished work is skipped; table, logs and report in <run root>/sweeps/<name>/")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bddn sweep``."""
    grid = parser.add_argument_group("grid")
    grid.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL",
                      help=f"registry names (see `bddn models`) (default {' '.join(DEFAULT_MODELS)})")
    grid.add_argument("--subjects", nargs="+", default=["1", "2", "3"], metavar="SUBJECT",
                      help="subject numbers (1 -> subj01) or names (default 1 2 3)")
    grid.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD",
                      help=f"fit methods, from {', '.join(SWEEP_METHODS)} (joint: one FactorTopy fit of all subjects "
                           f"per model) (default {' '.join(DEFAULT_METHODS)})")
    grid.add_argument("--name", default="default", help="the sweep's name: its folder <run root>/sweeps/<name>/")
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="synthetic", choices=[reader.name for reader in list_subject_readers()],
                      help="kind of subject data (default synthetic: subjects written by `bddn synth`, fitted with "
                           "every model as they are)")
    data.add_argument("--root", type=Path, default=None, help="data folder (default for synthetic: the run root)")
    images = data.add_mutually_exclusive_group()
    images.add_argument("--images", type=Path, nargs="+", default=None, metavar="DIR",
                        help="image folders of the set (default: the subjects' own image folders)")
    images.add_argument("--imageset", default=None, metavar="NAME",
                        help="an image set already under <run root>/imagesets/ (e.g. demo) instead of the subjects' "
                             "folders")
    data.add_argument("--image-list", type=Path, action="append", default=None, metavar="FILE",
                      help="text file naming image files, one per line (repeatable, with or instead of --images)")
    data.add_argument("--imageset-name", default=None, metavar="NAME",
                      help="name of the union image set and of its stores' folder (default: the data kind)")
    compute = parser.add_argument_group("compute")
    cluster = compute.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, default=None, metavar="N",
                         help=f"worker processes of a local dask cluster (default here {default_workers()}: half the "
                              "cores, at least 2, at most one per 4 GB of memory; on CUDA one per GPU)")
    cluster.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="address of a running dask.distributed scheduler (tcp://host:8786), e.g. one started "
                              "by dask-jobqueue or dask-kubernetes; GPU workers need --resources GPU=1")
    compute.add_argument("--threads", type=int, default=None, metavar="N",
                         help="torch threads per task (default: the cores divided by the local workers; with "
                              "--scheduler, torch's own default on each worker)")
    compute.add_argument("--device", default="auto",
                         help="device of every extraction and fit: auto (CUDA when available), cpu, cuda, cuda:N; "
                              "tasks on CUDA ask the cluster for one GPU resource each")
    compute.add_argument("--features-args", default="", metavar="ARGS",
                         help="extra flags for every `bddn features`, e.g. \"--grid 8 --batch-size 16\"")
    compute.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, metavar="N",
                         help=f"training epochs of the FactorTopy fits (factortopy, joint) (default {DEFAULT_EPOCHS}, "
                              "as bddn demo: the layer maps come from the warm start and do not change with epochs; "
                              "more refine R^2, space and scale)")
    compute.add_argument("--fit-args", default="", metavar="ARGS",
                         help="extra flags for every `bddn fit`, e.g. \"--batch-size 16\"")
    parser.add_argument("--no-report", action="store_true", help="skip the comparison figures at the end")


def run(args: argparse.Namespace) -> int:
    """Plan, skip what is up to date, run the rest on dask, write the table and the comparison; non-zero when a
    task failed (each failure listed with the command that reruns it)."""
    workers = default_workers() if args.workers is None else args.workers
    if workers < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError(f"--workers and --threads must be at least 1, got {workers} and {args.threads}")
    run_root = runroot.resolve_run_root(args.run_root)
    request = _request(args, run_root)
    folder = sweep_dir(run_root, request.name)
    root = data_root(request)
    broken = _broken_subjects(request, root)
    healthy = [subject for subject in request.subjects if subject_label(subject) not in broken]
    folders, lists = _sources(request, healthy, root)
    tasks = plan_tasks(request, folders, lists)
    device_args = ("--device", args.device)
    tasks = [dataclasses.replace(t, argv=(*t.argv, *device_args)) for t in tasks]
    threads = args.threads or (0 if args.scheduler else max(1, (os.cpu_count() or 1) // workers))
    context = TaskContext(records=run_root / "sweeps" / ".records", logs=folder / "logs", data=request.data,
                          data_root=root, folders=tuple(folders), lists=tuple(lists),
                          store_paths={t.model: t.outputs[0] for t in tasks if t.kind == "store"}, threads=threads,
                          device=args.device)
    rows, pending = _settled_rows(tasks, context, broken, have_images=bool(folders or lists or request.named_imageset))
    report = printer(len(tasks), already=0)
    for row in rows:
        report(row)
    if pending:
        gpu = uses_gpu(args.device)
        where = args.scheduler or f"a local cluster of {1 if gpu else workers} worker(s)"
        each = f"{threads} torch thread(s) each" if threads else "torch threads as the workers set them"
        print(f"sweep {request.name}: {len(pending)} of {len(tasks)} task(s) to run on {where}, {each}"
              f"{'; one GPU per task' if gpu else ''}", file=sys.stderr)
        with open_client(workers=workers, scheduler=args.scheduler, gpu=gpu) as client:
            rows += submit_tasks(client, pending, context, gpu=gpu, report=report)
    elif all(row["status"] == "skipped" for row in rows):
        print(f"sweep {request.name}: all {len(tasks)} task(s) up to date; nothing to run", file=sys.stderr)
    else:
        print(f"sweep {request.name}: nothing runnable (the other tasks failed at planning)", file=sys.stderr)
    table = build_table(tasks, rows)
    paths = write_table(table, folder)
    print(f"sweep {request.name}: table {paths['parquet']}", file=sys.stderr)
    if pending and not args.no_report:
        _report(folder, tasks, table, run_root, request)
    return _summary(request, table, args)


def _request(args: argparse.Namespace, run_root: Path) -> SweepRequest:
    if args.imageset is not None and (args.image_list or args.imageset_name):
        raise ConfigError("--imageset names an existing set; --image-list and --imageset-name make a new one")
    name = args.imageset or args.imageset_name or args.data
    return SweepRequest(
        name=args.name, run_root=run_root, models=tuple(args.models), subjects=tuple(args.subjects),
        methods=tuple(args.methods), data=args.data, root=args.root, imageset=name,
        images=tuple(args.images or ()), image_lists=tuple(args.image_list or ()),
        named_imageset=args.imageset is not None, epochs=args.epochs,
        feature_args=tuple(shlex.split(args.features_args)), fit_args=tuple(shlex.split(args.fit_args)))


def _broken_subjects(request: SweepRequest, root: Path) -> dict[str, str]:
    """Subject name -> why its files cannot be found (its tasks fail; the others run)."""
    broken = {}
    for subject in request.subjects:
        try:
            if request.images or request.image_lists or request.named_imageset or request.data == "nsd":
                continue
            subject_image_folders(request.data, subject, root)
        except BddnError as error:
            broken[subject_label(subject)] = str(error)
    return broken


def _sources(request: SweepRequest, healthy: list[str], root: Path) -> tuple[list[Path], list[Path]]:
    if request.named_imageset:
        return [runroot.image_folder(request.run_root, None, request.imageset)[0]], []
    if request.images or request.image_lists:
        return list(request.images), list(request.image_lists)
    folders: list[Path] = []
    for subject in healthy:
        folders += [f for f in subject_image_folders(request.data, subject, root) if f not in folders]
    return folders, []


def _settled_rows(tasks: list[Task], context: TaskContext, broken: dict[str, str], *,
                  have_images: bool) -> tuple[list[dict], list[Task]]:
    """Rows of tasks settled here (up to date, or failed at planning), and the tasks left to run."""
    rows, pending, settled_stores = [], [], set()
    for task in tasks:
        missing = [name for name in task.subjects if name in broken]
        if missing:
            rows.append(base_row(task, "failed", error=broken[missing[0]]))
            continue
        if task.kind == "store" and not have_images:
            rows.append(base_row(task, "failed", error="no subject has image files to extract"))
            settled_stores.add(task.key)
            continue
        if task.kind == "store" or task.depends in settled_stores:
            identity = task_identity(task, context)
            if is_up_to_date(context.records, task, identity):
                rows.append(base_row(task, "skipped"))
                settled_stores.add(task.key)
                continue
        if task.depends in settled_stores and any(r["task"] == task.depends and r["status"] == "failed" for r in rows):
            rows.append(base_row(task, "blocked", error=f"{task.depends} failed"))
            continue
        pending.append(task)
    return rows, pending


def _report(folder: Path, tasks: list[Task], table, run_root: Path, request: SweepRequest) -> None:
    names = [subject_label(subject) for subject in request.subjects]
    page = write_sweep_report(folder, tasks, table, run_root=run_root, models=request.models, subjects=names)
    print(f"sweep {request.name}: report {page}", file=sys.stderr)


def _summary(request: SweepRequest, table, args: argparse.Namespace) -> int:
    counts = table["status"].value_counts().to_dict()
    print(f"sweep {request.name}: " + ", ".join(f"{count} {status}" for status, count in sorted(counts.items())),
          file=sys.stderr)
    failed = table[table["status"].isin(["failed", "blocked"])]
    if failed.empty:
        return 0
    print(f"sweep {request.name}: {len(failed)} task(s) did not finish:", file=sys.stderr)
    for row in failed.itertuples(index=False):
        print(f"  {row.task}: {row.status}: {row.error}\n    rerun alone: {row.command}", file=sys.stderr)
    print(f"  or rerun the sweep (finished tasks are skipped): {sweep_command(request, args)}", file=sys.stderr)
    return 1


def sweep_command(request: SweepRequest, args: argparse.Namespace) -> str:
    """The ``bddn sweep`` command line of ``request`` (what reruns it)."""
    parts = ["--run-root", str(request.run_root), "sweep", "--name", request.name, "--models", *request.models,
             "--subjects", *request.subjects, "--methods", *request.methods, "--data", request.data]
    parts += ["--root", str(request.root)] if request.root is not None else []
    parts += ["--imageset", request.imageset] if request.named_imageset else []
    parts += ["--images", *map(str, request.images)] if request.images else []
    parts += [part for listed in request.image_lists for part in ("--image-list", str(listed))]
    parts += ["--imageset-name", args.imageset_name] if args.imageset_name else []
    parts += ["--scheduler", args.scheduler] if args.scheduler else []
    parts += ["--device", args.device] if args.device != "auto" else []
    parts += ["--epochs", str(args.epochs)] if args.epochs != DEFAULT_EPOCHS else []
    parts += ["--features-args", args.features_args] if args.features_args else []
    parts += ["--fit-args", args.fit_args] if args.fit_args else []
    return "bddn " + " ".join(shlex.quote(part) for part in parts)

