"""Stage two at Algonauts scale, end to end on one GPU: store build, synthetic subject, FactorTopy fit.

Builds a seeded random feature store shaped like a 12-layer ViT-B on the Algonauts 2023
subj01 training set (9,841 images x 12 layers x 768 channels, 8x8 grid + global token,
float16: ~11.8 GB), a synthetic subject of 37,984 vertices (subj01's nsdgeneral count)
whose responses are planted low-rank read-outs of those features, and fits it with
``stages.fit.train.fit_factortopy`` under the improved default ``FitConfig()``
(``--epochs`` epochs, device and resident mode ``auto``). Reports the store build, the
subject, and the fit's warm start / training / remaining time (the warm start also in training
epochs, a validation pass as a share of an epoch, the fit extrapolated to 20 epochs), images per
second, peak host RSS and gigabytes decoded from the store per phase (sampled with psutil, child
processes included), peak GPU memory,
held-out R^2 and the share of vertices whose chosen layer is the planted one. Unless
``--skip-step-bench``, it then runs ``bench/fit.py`` (training-step time and peak memory
of ours against the plain implementation) at the same scale on the same device. The
target is a fit of at most 120 s on one H100. Before anything it estimates the disk, host
memory and GPU memory the run needs (at full scale ~12.5 GB, ~21 GB and ~20 GB) and stops
if the disk or memory falls short.

The synthetic store and subject, and why they look as they do: ``bench/scale_data.py``.

Run it once on a GPU machine; one command there does it all. Where zarr, numcodecs, donfig
and google-crc32c are not installed and nothing can be downloaded, bring them as wheels
(here: ``pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d bench/results/wheels
zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0``;
``bench/results/wheels`` is git-ignored, the JSON results beside it are committed) and run,
from the repository root, with a 600 s limit (``bench/device_run.sh`` runs this, then the
step and stage-one benchmarks, in one go)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site bench/results/wheels/*.whl && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/fit_scale.py

Where the project's own environment is installed, ``.venv/bin/python bench/fit_scale.py``
is the whole command. The store goes to a new temporary folder (``--work`` to choose; never
a folder whose files are all collected afterwards, such as ``$OUT``: it holds thousands of
files) and is deleted at the end. The JSON summary goes to ``$OUT/fit_scale.json`` when
``$OUT`` is set, else ``<work>/fit_scale.json``; it is rewritten after every phase, so a
run cut short still leaves what it measured. Expected on one H100 with 16 cores: store
build 0.5-2 min (disk-bound: ~12 GB), subject ~15 s, fit ~1.5-4 min, step benchmark ~1 min
(stopped after 4), store removal ~10 s: about 4-8 minutes in all.

Smoke test (CPU, under a minute on two free cores)::

    .venv/bin/python bench/fit_scale.py --images 300 --vertices 2000 --layers 4 --channels 64 \\
        --epochs 2 --chunk-images 32 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from cache.errors import BddnError, InvalidInputError  # noqa: E402
from cache.folder import remove_store  # noqa: E402
from cache.store import FeatureStore  # noqa: E402
from pipeline import runroot  # noqa: E402
from stages.fit.layer_scores import BUDGET_BYTES  # noqa: E402
from stages.fit.streaming import SHUFFLE_BUFFER_BYTES  # noqa: E402
from stages.fit.warmstart import CELL_COMPONENTS  # noqa: E402
from stages.resources import PhaseMonitor  # noqa: E402
from stages.subject import Subject  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import GRID, build_store, make_subject  # noqa: E402

GB = 1e9
#: Target: the whole fit (warm start, training, evaluation) on one H100.
TARGET_FIT_SECONDS = 120.0
#: Entries of the fit's metrics copied into the summary (``other_seconds`` = the fit's wall time minus
#: warm start and training: input checks, loading features onto the device, final predictions).
FIT_METRICS = ("warm_start_seconds", "warm_start_layer_scores_seconds", "warm_start_cell_scores_seconds",
               "train_seconds", "epochs_run", "best_epoch", "steps", "device", "precision", "resident", "mean_r2_val",
               "mean_r2_test", "median_r2_test_nc")
STEP_BENCH_TIMEOUT_S = 240
#: Epochs of the full fit the one-epoch CPU runs are extrapolated to.
EXTRAPOLATED_EPOCHS = 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=9_841)
    parser.add_argument("--vertices", type=int, default=37_984)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--channels", type=int, default=768)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (the fit's device)")
    parser.add_argument("--precision", default="auto",
                        help="the fit's autocast (auto: bf16 on CUDA, fp32 on the CPU; bf16 applies on the CPU too)")
    parser.add_argument("--resident", choices=("auto", "on", "off"), default="auto",
                        help="the fit's feature residency (off = streamed, as `bddn fit --stream`)")
    parser.add_argument("--skip-figures", action="store_true", help="do not run `bddn figures` on the fit")
    parser.add_argument("--work", type=Path, help="folder for the store (default: a new temporary folder)")
    parser.add_argument("--json", type=Path, help="summary file (default: $OUT/fit_scale.json, else <work>/fit_scale.json)")
    parser.add_argument("--chunk-images", type=int, help="images per store block (default: the store's choice)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="store-writing processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-step-bench", action="store_true", help="do not run bench/fit.py")
    parser.add_argument("--keep-store", action="store_true", help="leave the store in place at the end")
    args = parser.parse_args()
    if min(args.images, args.vertices - 1, args.layers, args.channels, args.epochs, args.workers) < 1:
        parser.error("--images, --layers, --channels, --epochs and --workers must be >= 1, --vertices >= 2")
    return args


def store_bytes(args: argparse.Namespace) -> float:
    """Uncompressed bytes of the store's features: float16 local grid plus global token per layer."""
    return args.images * args.layers * args.channels * (GRID * GRID + 1) * 2.0


def estimate_needs(args: argparse.Namespace) -> dict[str, float]:
    """Bytes the run needs: ``disk`` (the store; random float16 barely compresses), ``ram`` (peak host
    memory of the fit's largest phase) and ``gpu`` (resident features plus the warm start's statistics).

    Host terms: the responses (float32, held by the subject throughout), and the larger of the warm
    start (its held pooled features and accumulators, ``layer_scores.BUDGET_BYTES``, plus one layer's
    solve and the per-cell cross products) and training (the z-scored training targets and about three
    shuffle buffers), plus ~1.5 GB of libraries, model and held-out features and predictions.
    """
    store = store_bytes(args)
    responses = args.images * args.vertices * 4.0
    layer = args.channels * 5 * args.vertices * 4.0
    warm_start = BUDGET_BYTES + layer + GRID * GRID * CELL_COMPONENTS * args.vertices * 4.0
    training = responses + 3 * SHUFFLE_BUFFER_BYTES
    ram = responses + max(warm_start, training) + 1.5 * GB
    gpu = store + responses + BUDGET_BYTES + 4 * GB
    return {"disk": store * 1.02 + 0.5 * GB, "ram": ram, "gpu": gpu}


def check_resources(work: Path, needs: dict[str, float]) -> dict[str, float]:
    """Free disk at ``work`` and available RAM, checked against ``needs``; a store on a memory-backed
    file system counts against RAM too. Raises InvalidInputError naming what is short and the fix."""
    free_disk = shutil.disk_usage(work).free
    mount = max((part for part in psutil.disk_partitions(all=True) if str(work.resolve()).startswith(part.mountpoint)),
                key=lambda part: len(part.mountpoint), default=None)
    in_memory = mount is not None and mount.fstype in ("tmpfs", "ramfs")
    ram_needed = needs["ram"] + (needs["disk"] if in_memory else 0.0)
    available = psutil.virtual_memory().available
    print(f"needs: disk {needs['disk'] / GB:.1f} GB at {work} (free {free_disk / GB:.1f} GB"
          f"{', memory-backed' if in_memory else ''}), host RAM ~{ram_needed / GB:.1f} GB "
          f"(available {available / GB:.1f} GB), GPU ~{needs['gpu'] / GB:.1f} GB", flush=True)
    if free_disk < needs["disk"]:
        raise InvalidInputError(f"{work} has {free_disk / GB:.1f} GB free but the store needs ~{needs['disk'] / GB:.1f} GB;"
                                f" pass --work on a larger disk or lower --images/--layers/--channels")
    if available < ram_needed:
        raise InvalidInputError(f"the run needs ~{ram_needed / GB:.1f} GB of host memory, {available / GB:.1f} GB is "
                                f"available; lower --images/--vertices or free memory")
    return {"free_disk_gb": free_disk / GB, "available_ram_gb": available / GB, "store_in_memory": in_memory}


class Report:
    """The run's summary, written to ``path`` after every phase and every ``save_every`` seconds meanwhile
    (atomically), so a run stopped from outside still leaves what it measured; each phase's seconds and peak
    resident memory (this process and its children) come from a :class:`~stages.resources.PhaseMonitor`."""

    def __init__(self, path: Path, summary: dict[str, Any], *, interval: float = 0.1, save_every: float = 15.0) -> None:
        self.path = path
        self.summary = summary
        self.started = time.perf_counter()
        self.monitor = PhaseMonitor(interval=interval).__enter__()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._save_forever, args=(save_every,), name="report", daemon=True)
        self._thread.start()

    def _save_forever(self, save_every: float) -> None:
        while not self._stop.wait(save_every):
            self.save()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` and sample its peak RSS; save the summary at its end."""
        try:
            with self.monitor.phase(name):
                yield
        finally:
            self.save()

    def update(self, **entries: Any) -> None:
        """Add or replace top-level entries of the summary."""
        with self._lock:
            self.summary.update(entries)

    def save(self) -> None:
        """Write the summary (with every phase's seconds and peak, and the elapsed time) through a temporary file."""
        with self._lock:
            record = self.monitor.record()
            self.summary["running"] = next((name for name, entry in record.items() if entry.get("running")), None)
            self.summary["phase_seconds"] = {name: entry["seconds"] for name, entry in record.items()}
            self.summary["peak_rss_gb"] = {name: entry["peak_rss_gb"] for name, entry in record.items()}
            self.summary["total_seconds"] = time.perf_counter() - self.started
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(json.dumps(self.summary, indent=2, default=str))
            os.replace(partial, self.path)

    def close(self) -> None:
        """Stop sampling and write the summary a last time."""
        self._stop.set()
        self._thread.join()
        self.monitor.__exit__(None, None, None)
        self.save()


def run_fit(store: FeatureStore, subject: Subject, planted_layer: np.ndarray, args: argparse.Namespace
            ) -> tuple[dict[str, Any], Any]:
    """Fit FactorTopy with ``FitConfig()`` (epochs, device, precision and residency from ``args``); its timings, throughput,
    phases (seconds and peak RSS, as the fit records them) and scores, and the fit itself.

    torch is imported here, not at module level, so the store-writing worker processes start without it.
    """
    import torch

    from stages.fit.config import FitConfig
    from stages.fit.train import fit_factortopy

    cfg = FitConfig(epochs=args.epochs, device=args.device, precision=args.precision, resident=args.resident)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = fit_factortopy(store, subject, cfg, checkpoint_dir=None, progress=True)
    seconds = time.perf_counter() - started
    metrics = result.metrics
    out: dict[str, Any] = {"seconds": seconds, "batch_size": cfg.batch_size,
                           "layer_recovery": float(np.mean(result.layer_weights.argmax(axis=1) == planted_layer))}
    out.update({key: metrics[key] for key in FIT_METRICS if key in metrics})
    out["phases"] = metrics.get("phases", {})
    out["feature_source"] = metrics.get("feature_source")
    out["held_out_source"] = metrics.get("held_out_source")
    if "train_seconds" in metrics and "epochs_run" in metrics:
        out["images_per_s"] = metrics["epochs_run"] * len(subject.splits["train"]) / metrics["train_seconds"]
        out["other_seconds"] = seconds - metrics["train_seconds"] - metrics.get("warm_start_seconds", 0.0)
        epoch_seconds = out["phases"].get("train", {}).get("seconds", metrics["train_seconds"]) / metrics["epochs_run"]
        out["epoch_seconds"] = epoch_seconds
        out["warm_start_epochs"] = metrics.get("warm_start_seconds", 0.0) / epoch_seconds
        out["warm_start_share"] = metrics.get("warm_start_seconds", 0.0) / seconds
        out.update(extrapolate(out["phases"], epochs_run=metrics["epochs_run"], epochs=EXTRAPOLATED_EPOCHS))
    out["epoch_images_per_s"] = [round(row.get("images_per_s", float("nan")), 1) for row in result.history]
    if cuda:
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / GB
        out["peak_gpu_reserved_gb"] = torch.cuda.max_memory_reserved() / GB
        torch.cuda.empty_cache()   # the step benchmark's processes come next
    return out, result


def extrapolate(phases: dict[str, dict[str, float]], *, epochs_run: int, epochs: int) -> dict[str, float]:
    """A validation pass as a share of a training epoch, and the fit's seconds at ``epochs`` epochs: the warm
    start, the preparation and the final predictions once, training and validation per epoch."""
    def seconds(name: str) -> float:
        return phases.get(name, {}).get("seconds", 0.0)

    epoch, validate = seconds("train") / epochs_run, seconds("validate") / epochs_run
    once = seconds("warm_start") + seconds("prepare") + seconds("predict")
    return {"validate_share_of_epoch": validate / max(epoch, 1e-9),
            f"extrapolated_{epochs}_epoch_seconds": once + epochs * (epoch + validate)}


def environment() -> dict[str, Any]:
    """The machine and library versions the numbers come from."""
    import torch
    import zarr

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "numpy": np.__version__, "zarr": zarr.__version__, "cpu_count": os.cpu_count(),
            "ram_gb": psutil.virtual_memory().total / GB,
            "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / GB if cuda else None}


def run_step_bench(args: argparse.Namespace, device: str, work: Path) -> dict[str, Any]:
    """``bench/fit.py`` at this scale on ``device``: per configuration s/step and peak memory (GB), the ratios
    against the plain implementation and how loaded the machine was."""
    target = work / "fit_step.json"
    command = [sys.executable, str(ROOT / "bench" / "fit.py"), "--device", device, "--vertices", str(args.vertices),
               "--layers", str(args.layers), "--channels", str(args.channels),
               "--steps", "10" if device == "cuda" else "2", "--json", str(target)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=STEP_BENCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:   # its worker processes too: they may hold GPU memory
            for child in psutil.Process(process.pid).children(recursive=True) + [psutil.Process(process.pid)]:
                try:
                    child.kill()
                except psutil.NoSuchProcess:   # ended meanwhile
                    pass
            stdout, stderr = process.communicate()
            stderr = f"bench/fit.py ran past {STEP_BENCH_TIMEOUT_S} s and was stopped"
    print(stdout, end="", flush=True)
    if process.returncode != 0:
        return {"error": stderr.strip().splitlines()[-1:]}
    report = json.loads(target.read_text())
    rows = [{key: row[key] for key in ("worker", "batch", "amp", "error") if key in row}
            | ({"step_s": row["step_s"], "cpu_s": row["cpu_s"], "peak_gb": row["peak_bytes"] / GB}
               if "step_s" in row else {})
            for row in report["results"]]
    return {"configurations": rows, "ratios": report["ratios"], "machine": report["machine"]}


def main() -> int:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bddn-fit-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    json_path = args.json or (Path(os.environ["OUT"]) / "fit_scale.json" if os.environ.get("OUT")
                              else work / "fit_scale.json")
    summary: dict[str, Any] = {
        "bench": "fit_scale", "environment": environment(),
        "scale": {"images": args.images, "vertices": args.vertices, "layers": args.layers,
                  "channels": args.channels, "grid": GRID, "epochs": args.epochs, "precision": args.precision}}
    print(f"environment: {summary['environment']}", flush=True)
    needs = estimate_needs(args)
    summary["needs_gb"] = {key: value / GB for key, value in needs.items()}
    summary["resources"] = check_resources(work, needs)
    cuda = summary["environment"]["gpu_memory_gb"] is not None and args.device != "cpu"
    report = Report(json_path, summary)
    store_path = work / "features.zarr"
    try:
        with report.phase("store"):
            store, projections = build_store(store_path, args)
        seconds, raw = summary["phase_seconds"]["store"], store_bytes(args)
        on_disk = sum(entry.stat().st_size for entry in store_path.rglob("*") if entry.is_file())
        report.update(store={"seconds": seconds, "raw_gb": raw / GB, "disk_gb": on_disk / GB,
                             "write_mb_per_s": raw / 1e6 / seconds, "chunk_images": store.chunk_images,
                             "n_chunks": store.n_chunks, "workers": min(args.workers, store.n_chunks)})
        print(f"store: {summary['store']}", flush=True)
        with report.phase("subject"):
            subject, planted_layer = make_subject(store, projections, args)
            del projections
        report.update(subject={"seconds": summary["phase_seconds"]["subject"],
                               "splits": {name: len(rows) for name, rows in subject.splits.items()}})
        print(f"subject: {summary['subject']}", flush=True)
        with report.phase("fit"):
            fit_summary, result = run_fit(store, subject, planted_layer, args)
            report.update(fit=fit_summary)
        fit_folder = runroot.fit_dir(work / "runs", "random-fit-scale", subject.name)
        with report.phase("write"):
            result.save(fit_folder)
        del result
        if args.skip_figures:
            report.update(figures="skipped")
        else:
            with report.phase("figures"):
                report.update(figures=run_figures(fit_folder, work / "runs"))
        fit_seconds = summary["fit"]["seconds"]
        report.update(target={"fit_seconds_max": TARGET_FIT_SECONDS, "fit_seconds": fit_seconds,
                              "met": fit_seconds <= TARGET_FIT_SECONDS if cuda else None,
                              "judged_on": "one GPU" if cuda else "not judged: no GPU"})
        if args.skip_step_bench:
            report.update(step_bench="skipped")
        else:
            with report.phase("step_bench"):
                report.update(step_bench=run_step_bench(args, "cuda" if cuda else "cpu", work))
    finally:
        report.save()
        if not args.keep_store and store_path.exists():
            with report.phase("remove_store"):
                remove_store(store_path)
        report.close()
    print_phase_table(summary)
    print(json.dumps(summary, default=str))
    return 0


def run_figures(fit_folder: Path, run_root: Path) -> dict[str, Any]:
    """``bddn figures`` on the fit, in its own process (its peak memory is sampled as this phase's child)."""
    command = [sys.executable, "-m", "pipeline.cli", "--run-root", str(run_root), "figures", str(fit_folder),
               "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    out: dict[str, Any] = {"seconds": time.perf_counter() - started, "returncode": done.returncode}
    if done.returncode != 0:
        out["error"] = done.stderr.strip().splitlines()[-3:]
    return out


def print_phase_table(summary: dict[str, Any]) -> None:
    """Seconds and peak host RSS of every phase, the fit's own phases indented under it."""
    seconds, peaks = summary.get("phase_seconds", {}), summary.get("peak_rss_gb", {})
    inner = summary.get("fit", {}).get("phases", {}) if isinstance(summary.get("fit"), dict) else {}
    print(f"{'phase':24s} {'seconds':>9s} {'peak RSS GB':>12s} {'store GB read':>14s}")
    for name, value in seconds.items():
        print(f"{name:24s} {value:9.1f} {peaks.get(name, float('nan')):12.2f}")
        if name == "fit":
            for inner_name, entry in inner.items():
                print(f"  {inner_name:22s} {entry['seconds']:9.1f} {entry['peak_rss_gb']:12.2f} "
                      f"{entry.get('store_gb_read', float('nan')):14.2f}")
    fit = summary.get("fit", {})
    if "warm_start_epochs" in fit:
        print(f"warm start: {fit.get('warm_start_seconds', 0):.1f} s = {fit['warm_start_epochs']:.2f} training epochs "
              f"({fit['warm_start_share']:.0%} of the fit); one epoch {fit['epoch_seconds']:.1f} s; a validation pass "
              f"{fit['validate_share_of_epoch']:.1%} of an epoch; {EXTRAPOLATED_EPOCHS} epochs: "
              f"{fit[f'extrapolated_{EXTRAPOLATED_EPOCHS}_epoch_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BddnError as error:   # bad options or too little disk/memory: one line, as the CLI does
        print(f"fit_scale: {error}", file=sys.stderr)
        raise SystemExit(1) from None
