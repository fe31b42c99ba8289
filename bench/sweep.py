"""Sweep benchmark: the sweep's wall time over the sum of its tasks run one after another.

Builds a small synthetic run root (``--images`` demo images at 64 px, a mobilenet_v2
store, ``--subjects`` synthetic subjects of 300 vertices per hemisphere planted from it),
then, each on its own copy of that run root:

* **sequential**: every task of the sweep's plan (``bddn features`` per model over the
  subjects' images, ``bddn fit`` per model x subject x method) run one after another in
  this process with all of torch's threads: the baseline;
* **sweep, N workers** for each N in ``--workers`` (default 1 and half the cores or 2):
  ``bddn sweep --no-report`` on a fresh LocalCluster, wall time including the cluster's
  start and stop.

Printed: each run's wall seconds, the sum of the tasks' own seconds as the sweep table
records them, and the ratio sweep wall / sequential sum. With one worker the ratio is
the scheduling overhead (cluster start, worker imports, model loads in fresh processes);
with more workers it includes the gain from running tasks side by side.

    .venv/bin/python bench/sweep.py [--models mobilenet_v2,efficientnet_lite0] [--subjects 1,2]
        [--methods ridge] [--images 48] [--workers 1,2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from pipeline import cli  # noqa: E402
from pipeline.runroot import resolve_run_root  # noqa: E402
from pipeline.sweep.plan import SweepRequest, image_sources, plan_tasks  # noqa: E402
from pipeline.weights import install_all_weights  # noqa: E402


def build_base(runs: Path, *, images: int, subjects: list[str]) -> None:
    """Demo images, the mobilenet_v2 store that plants the subjects, the synthetic subjects."""
    for argv in (["demo-images", "--count", str(images), "--size", "64"],
                 ["features", "--model", "mobilenet_v2", "--no-progress"],
                 ["synth", "--subjects", *subjects, "--vertices", "300", "--no-progress"]):
        if cli.main(["--run-root", str(runs), *argv]) != 0:
            raise SystemExit(f"building the benchmark run root failed at `bddn {' '.join(argv)}`")


def run_sequential(runs: Path, request: SweepRequest) -> tuple[float, list[float]]:
    """Every planned task's command, one after another, in this process: (wall seconds, per-task seconds)."""
    folders, lists = image_sources(request)
    seconds = []
    started = time.perf_counter()
    for task in plan_tasks(request, folders, lists):
        begin = time.perf_counter()
        if cli.main([*task.argv, "--no-progress"]) != 0:
            raise SystemExit(f"task {task.key} failed")
        seconds.append(time.perf_counter() - begin)
    return time.perf_counter() - started, seconds


def run_sweep(runs: Path, request: SweepRequest, workers: int) -> tuple[float, float]:
    """``bddn sweep`` on ``workers`` local workers: (wall seconds, sum of the tasks' recorded seconds)."""
    started = time.perf_counter()
    status = cli.main(["--run-root", str(runs), "sweep", "--models", *request.models, "--subjects", *request.subjects,
                       "--methods", *request.methods, "--workers", str(workers), "--name", "bench", "--no-report"])
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"the sweep on {workers} worker(s) failed")
    table = pd.read_parquet(runs / "sweeps" / "bench" / "sweep.parquet")
    return wall, float(table["seconds"].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,efficientnet_lite0")
    parser.add_argument("--subjects", default="1,2")
    parser.add_argument("--methods", default="ridge")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--workers", default=f"1,{max(2, (os.cpu_count() or 2) // 2)}")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    subjects = args.subjects.split(",")
    scratch = Path(tempfile.mkdtemp(prefix="bddn-bench-sweep-"))
    os.environ["TORCH_HOME"] = str(scratch / "torch")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        install_all_weights()
        base = scratch / "base"
        build_base(base, images=args.images, subjects=subjects)

        def request(runs: Path) -> SweepRequest:
            return SweepRequest(name="bench", run_root=resolve_run_root(runs), models=tuple(args.models.split(",")),
                                subjects=tuple(subjects), methods=tuple(args.methods.split(",")))

        copy = scratch / "sequential"
        shutil.copytree(base, copy)
        sequential_wall, task_seconds = run_sequential(copy, request(copy))
        sequential = sum(task_seconds)
        results = {"cores": os.cpu_count(), "images": args.images, "models": args.models, "subjects": args.subjects,
                   "methods": args.methods, "n_tasks": len(task_seconds), "sequential_sum_s": round(sequential, 2),
                   "sweeps": []}
        print(f"sequential: {len(task_seconds)} tasks, sum {sequential:.1f} s (wall {sequential_wall:.1f} s) "
              f"on {os.cpu_count()} cores")
        for workers in [int(value) for value in args.workers.split(",")]:
            copy = scratch / f"sweep-{workers}"
            shutil.copytree(base, copy)
            wall, recorded = run_sweep(copy, request(copy), workers)
            ratio = wall / sequential
            results["sweeps"].append({"workers": workers, "wall_s": round(wall, 2), "task_sum_s": round(recorded, 2),
                                      "ratio_wall_over_sequential_sum": round(ratio, 3)})
            print(f"sweep, {workers} worker(s): wall {wall:.1f} s, tasks' own seconds {recorded:.1f} s; "
                  f"wall / sequential sum = {ratio:.2f}")
        results["load_average_1_5_15_min_at_end"] = [round(value, 2) for value in os.getloadavg()]
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
