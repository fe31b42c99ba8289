"""FactorTopy training-step speed and peak memory: ours against the plain implementation.

One step = forward + smooth-L1 loss + regulariser + backward + AdamW step, at the reference
scale by default (37,984 vertices, 12 layers x 768 channels, D = 128, 8x8 grid, random
features). The selector heads are randomised first so the sample points spread over the
whole grid (as after training) instead of sitting at the centre, which would flatter the
grouped read-out. Each configuration runs in its own subprocess, so its peak memory
(``ru_maxrss`` on CPU, ``torch.cuda.max_memory_allocated`` on GPU) is its own. The
processes start together and take their steps in turn (one step of each configuration per
round, the order rotating), so load from elsewhere hits every configuration alike and the
ratios hold from run to run; the time is the median of ``--steps`` steps after one warm-up
step, in wall-clock and in CPU seconds. The machine's CPU steal during the steps (from
``/proc/stat``: a virtual machine's stolen time, which inflates wall and CPU time alike) and
the runnable load of other processes are printed, with a warning to rerun when the machine
was loaded.

Configurations: ``ours`` (float32, and bfloat16 autocast on CPU / float16 on CUDA),
``dense`` (the same contraction through a dense (n_vertices, n_layers * cells)
interpolation matrix: the alternative formulation, kept here for comparison) and
``plain`` (tests/plain_factortopy.py: per-layer grid_sample and weighting). The plain one
needs about ``4 * n_images * n_vertices * D * (2 * n_layers + 2)`` bytes (4 GB at batch
8); it is run at ``--plain-batch`` and, at ``--batch`` too, only when that estimate fits
in half of the available memory.

Usage: python bench/fit.py [--device cpu|cuda] [--batch 32] [--plain-batch 8] [--steps 3]
                           [--vertices 37984] [--layers 12] [--channels 768] [--grid 8]
                           [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psutil  # noqa: E402
import torch  # noqa: E402

from stages.fit import factortopy, readout  # noqa: E402
from stages.fit.factortopy import FactorTopy, FactorTopyConfig  # noqa: E402
from stages.fit.objective import regression_loss  # noqa: E402


def build_model(args: argparse.Namespace) -> FactorTopy:
    """A reference-scale model with spread-out selectors (seeded)."""
    torch.manual_seed(0)
    coords = torch.randn(args.vertices, 3)
    model = FactorTopy(n_channels=[args.channels] * args.layers, grid=args.grid, coords=coords,
                       cfg=FactorTopyConfig())
    with torch.no_grad():
        hidden = model.selectors.space.body(model.position_encoding(0))
        weight = torch.randn(2, hidden.shape[1])
        mean = hidden.mean(dim=0)
        weight -= (weight @ mean)[:, None] * mean / mean.dot(mean)
        model.selectors.space.head.weight.copy_(weight / (hidden @ weight.T).std(dim=0)[:, None])
        model.selectors.layer.head.weight.normal_(0.0, 0.5)
        model.selectors.scale.head.weight.normal_(0.0, 0.5)
    return model


def dense_sampled_readout(padded: torch.Tensor, grid: int, space: torch.Tensor, layer_weights: torch.Tensor,
                          weight: torch.Tensor) -> torch.Tensor:
    """The local path through a dense interpolation matrix M (n_vertices, n_layers * (grid + 2) ** 2)."""
    n_layers, n_cells, n_images, width = padded.shape
    cell, corner_weights = readout.bilinear_corners(space, grid)
    side = grid + 2
    top_left = (cell.long() // (grid + 1)) * side + cell.long() % (grid + 1)
    corners = top_left[:, None] + torch.tensor([0, 1, side, side + 1], device=space.device)
    mixing = layer_weights[:, :, None] * corner_weights[:, None, :]
    matrix = torch.zeros(len(space), n_layers, n_cells, dtype=mixing.dtype, device=space.device)
    matrix = matrix.scatter_add(2, corners[:, None, :].expand(-1, n_layers, -1), mixing)
    mixed = matrix.flatten(1) @ padded.reshape(n_layers * n_cells, n_images * width)
    return (mixed.view(len(space), n_images, width) * weight[:, None, :]).sum(dim=2)


def run_worker(args: argparse.Namespace) -> None:
    """Serve one configuration: build it, take a warm-up step, then one timed step per ``step`` line on stdin.

    Prints one JSON line when ready (memory before the first step), one per step (wall and CPU seconds)
    and one at ``done`` (peak memory), so the parent can interleave configurations step by step.
    """
    import resource

    device = torch.device(args.device)
    model = build_model(args)
    if args.worker == "plain":
        from plain_factortopy import plain_copy_of

        torch.manual_seed(0)
        model = plain_copy_of(model, torch.randn(args.vertices, 3))
    elif args.worker == "dense":
        factortopy.sampled_readout = dense_sampled_readout  # swap the local path for the dense variant
    model = model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    local = [torch.randn(args.batch, args.channels, args.grid, args.grid, generator=generator).to(device)
             for _ in range(args.layers)]
    global_ = [torch.randn(args.batch, args.channels, generator=generator).to(device) for _ in range(args.layers)]
    target = torch.randn(args.batch, args.vertices, generator=generator).to(device)
    autocast_dtype = {"cpu": torch.bfloat16, "cuda": torch.float16}[device.type]

    def step() -> dict[str, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=args.amp):
            if args.worker == "plain":
                prediction = model(local, global_)
            else:  # the selector MLPs run once per step, for the prediction and the prior
                chosen = model.selections()
                prediction = model(local, global_, selections=chosen)
        loss = regression_loss(prediction, target)
        if args.worker != "plain":
            loss = loss + 0.1 * model.regulariser(selections=chosen)
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return {"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu_start}

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = psutil.Process().memory_info().rss
    step()
    print(json.dumps({"ready": True, "base_bytes": base, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        print(json.dumps(step()), flush=True)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_bytes": peak}), flush=True)


def cpu_counters() -> tuple[int, int]:
    """(steal, total) jiffies of every CPU so far, from /proc/stat; (0, 0) where it is absent."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0, 0
    values = [int(value) for value in fields]
    return (values[7] if len(values) > 7 else 0), sum(values[:8])


class Worker:
    """One configuration's process, driven one step at a time."""

    def __init__(self, args: argparse.Namespace, worker: str, batch: int, amp: bool) -> None:
        self.key = (worker, batch, amp)
        command = [sys.executable, __file__, "--worker", worker, "--batch", str(batch), "--device", args.device,
                   "--vertices", str(args.vertices), "--layers", str(args.layers), "--channels", str(args.channels),
                   "--grid", str(args.grid)] + (["--amp"] if amp else [])
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, bufsize=1)
        self.steps: list[dict[str, float]] = []
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            error = self.process.stderr.read().strip().splitlines()[-1:]
            raise RuntimeError(f"{self.key} stopped: {error}")
        return json.loads(line)

    def step(self) -> None:
        steal, total = cpu_counters()
        self.process.stdin.write("step\n")
        reply = self._reply()
        steal_after, total_after = cpu_counters()
        reply["steal"] = (steal_after - steal) / max(total_after - total, 1)
        self.steps.append(reply)

    def finish(self) -> dict:
        self.process.stdin.write("done\n")
        self.process.stdin.close()
        peak = self._reply()["peak_bytes"]
        self.process.wait()
        worker, batch, amp = self.key
        walls = [row["wall_s"] for row in self.steps]
        cpus = [row["cpu_s"] for row in self.steps]
        return {"worker": worker, "batch": batch, "amp": amp, "step_s": statistics.median(walls), "times": walls,
                "cpu_s": statistics.median(cpus), "cpu_times": cpus, "threads": self.info["threads"],
                "steal": statistics.mean(row["steal"] for row in self.steps),
                "peak_bytes": peak, "base_bytes": self.info["base_bytes"]}


def run_interleaved(args: argparse.Namespace, plan: list[tuple[str, int, bool]]) -> list[dict]:
    """Every configuration's process started at once, then ``args.steps`` rounds of one step each (the order
    rotating every round), so a burst of load from elsewhere hits every configuration alike."""
    workers, results = [], []
    for worker, batch, amp in plan:
        try:
            workers.append(Worker(args, worker, batch, amp))
        except RuntimeError as error:
            results.append({"worker": worker, "batch": batch, "amp": amp, "error": str(error)})
    for round_index in range(args.steps):
        shift = round_index % max(len(workers), 1)
        for item in workers[shift:] + workers[:shift]:
            item.step()
    return results + [item.finish() for item in workers]


def machine_load(results: list[dict]) -> dict:
    """How busy the machine was: CPU steal during the steps, and runnable tasks from elsewhere at the end."""
    ok = [row for row in results if "error" not in row]
    steal = statistics.mean(row["steal"] for row in ok) if ok else 0.0
    others = max(os.getloadavg()[0] - 1.0, 0.0)
    busy = [row for row in ok if row["cpu_s"] < 0.5 * row["step_s"]]
    loaded = steal > 0.05 or others > 0.5 * (os.cpu_count() or 1)
    return {"steal_share": steal, "load_from_others": others, "cores": os.cpu_count(),
            "waiting_configurations": [f"{row['worker']} b{row['batch']}" for row in busy], "loaded": loaded}


def plain_bytes(args: argparse.Namespace, batch: int) -> int:
    return 4 * batch * args.vertices * 128 * (2 * args.layers + 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--plain-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--vertices", type=int, default=37_984)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--channels", type=int, default=768)
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--no-dense", action="store_true", help="skip the dense-matrix variant")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=["ours", "dense", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--amp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return 0

    budget = psutil.virtual_memory().available // 2
    if args.device == "cuda":
        budget = torch.cuda.get_device_properties(0).total_memory * 0.9
    plan = [("ours", args.batch, False), ("ours", args.batch, True)]
    if not args.no_dense:
        plan.append(("dense", args.batch, False))
    for batch in sorted({args.plain_batch, args.batch}):
        if plain_bytes(args, batch) <= budget:
            plan += [("ours", batch, False)] if batch != args.batch else []
            plan.append(("plain", batch, False))
            budget -= plain_bytes(args, batch)   # every configuration's process is alive at once
        else:
            print(f"plain at batch {batch} skipped: needs ~{plain_bytes(args, batch) / 1e9:.1f} GB, "
                  f"budget {budget / 1e9:.1f} GB")
    results = run_interleaved(args, plan)
    load = machine_load(results)
    for result in results:
        worker, batch, amp = result["worker"], result["batch"], result["amp"]
        if "error" in result:
            print(f"{worker:6s} batch {batch:3d} {'amp ' if amp else 'fp32'}  failed: {result['error']}")
        else:
            print(f"{worker:6s} batch {batch:3d} {'amp ' if amp else 'fp32'}  {result['step_s']:8.3f} s/step "
                  f"({result['step_s'] / batch * 1000:7.1f} ms/image, CPU {result['cpu_s']:7.2f} s on "
                  f"{result['threads']} threads)  peak {result['peak_bytes'] / 1e9:6.2f} GB "
                  f"(before the first step {result['base_bytes'] / 1e9:5.2f} GB)  "
                  f"steps {', '.join(f'{t:.2f}' for t in result['times'])}", flush=True)
    ok = {(r["worker"], r["batch"], r["amp"]): r for r in results if "error" not in r}
    ratios = {}
    for batch in sorted({args.plain_batch, args.batch}):
        plain = ok.get(("plain", batch, False))
        for amp, name in ((False, "fp32"), (True, "amp")):
            ours = ok.get(("ours", batch, amp))
            if plain and ours:
                ratios[f"batch{batch}_{name}"] = plain["step_s"] / ours["step_s"]
                print(f"batch {batch}: ours {name} is {plain['step_s'] / ours['step_s']:.1f}x faster than plain fp32 "
                      f"({plain['cpu_s'] / ours['cpu_s']:.1f}x in CPU time), "
                      f"peak memory {ours['peak_bytes'] / plain['peak_bytes']:.2f}x")
    plain = ok.get(("plain", args.plain_batch, False))
    ours = ok.get(("ours", args.batch, False))
    if plain and ours and args.plain_batch != args.batch:
        per_image = (plain["step_s"] / args.plain_batch) / (ours["step_s"] / args.batch)
        per_image_cpu = (plain["cpu_s"] / args.plain_batch) / (ours["cpu_s"] / args.batch)
        ratios["per_image_fp32"] = per_image
        print(f"per image: ours at batch {args.batch} is {per_image:.1f}x faster than plain at batch {args.plain_batch} "
              f"({per_image_cpu:.1f}x in CPU time)")
    print(f"machine: CPU steal {load['steal_share']:.1%} during the steps, load from other processes "
          f"{load['load_from_others']:.1f} on {load['cores']} cores -> "
          f"{'LOADED: rerun on a quiet machine before quoting' if load['loaded'] else 'quiet'}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": ratios, "machine": load}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
