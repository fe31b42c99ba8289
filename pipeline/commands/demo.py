"""``bddn demo``: every stage on the embedded default, one command after another in one process.

Each step is the ``bddn`` command it names, run by :func:`pipeline.cli.main` exactly as if typed
(the same options, outputs and errors); running them in one process imports the libraries once
instead of once per command, a few seconds each on a small machine.
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline import cli, runroot

NAME = "demo"
HELP = ("run all three stages on the embedded default: the demo images, their features, synthetic subjects, "
        "a FactorTopy and a ridge fit of one subject, and the figures (what `make demo` runs); prints each "
        "step's command and its seconds")

DEFAULT_MODEL = "mobilenet_v2"
DEFAULT_EPOCHS = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bddn demo``."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"feature model (default {DEFAULT_MODEL})")
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 3], metavar="N",
                        help="synthetic subjects to make (default 1 2 3)")
    parser.add_argument("--subject", type=int, default=1, help="the subject to fit (default 1)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"FactorTopy training epochs (default {DEFAULT_EPOCHS})")


def demo_steps(args: argparse.Namespace) -> list[list[str]]:
    """The demo's ``bddn`` command lines, in order (without the run root)."""
    model, subject = args.model, str(args.subject)
    fit = ["fit", "--subject", subject, "--model", model, "--data", "synthetic"]
    return [
        ["demo-images"],
        ["features", "--model", model, "--imageset", runroot.DEFAULT_IMAGESET],
        ["synth", "--subjects", *map(str, args.subjects), "--model", model],
        [*fit, "--epochs", str(args.epochs)],
        [*fit, "--method", "ridge"],
        ["figures"],
    ]


def run(args: argparse.Namespace) -> int:
    """Run each step; stop at the first that fails, with its exit status."""
    root = ["--run-root", str(args.run_root)] if args.run_root else []
    steps, timings = demo_steps(args), []
    for index, step in enumerate(steps, start=1):
        line = " ".join(["bddn", *root, *step])
        print(f"bddn demo: step {index}/{len(steps)}: {line}", file=sys.stderr)
        started = time.perf_counter()
        status = cli.main([*root, *step])
        timings.append((line, time.perf_counter() - started))
        if status:
            print(f"bddn demo: stopped: `{line}` exited with status {status}", file=sys.stderr)
            return status
    print("bddn demo: done; seconds per step:", file=sys.stderr)
    for line, seconds in timings:
        print(f"  {seconds:7.1f}  {line}", file=sys.stderr)
    return 0
