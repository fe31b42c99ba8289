"""The ``bddn`` console command: one sub-command per job, each in ``pipeline/commands/``.

Every sub-command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Errors derived from :class:`cache.errors.BddnError` become one
line on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import shutil
import sys
from pathlib import Path
from typing import Sequence

from cache.errors import BddnError
from pipeline import runroot

#: Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "pipeline.commands.models",
    "pipeline.commands.demo",
    "pipeline.commands.demo_images",
    "pipeline.commands.features",
    "pipeline.commands.synth",
    "pipeline.commands.fit",
    "pipeline.commands.figures",
    "pipeline.commands.compare",
    "pipeline.commands.sweep",
    "pipeline.commands.predict",
    "pipeline.commands.preferred",
)


def command_name(module_name: str) -> str:
    """The ``bddn`` word of a command module (``pipeline.commands.demo_images`` -> ``demo-images``)."""
    return module_name.rsplit(".", 1)[-1].replace("_", "-")


def chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command word of ``argv`` (the first argument that is not an option or ``--run-root``'s
    value), or None when there is none."""
    words = iter(argv)
    for word in words:
        if word == "--run-root":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every available sub-command, or with ``only`` that one when it names one.

    Each command module imports what its stage needs (torch, matplotlib, scikit-learn...), a few
    seconds on a small machine, so a command run imports its own module alone; ``--help`` and a
    misspelt command get every command.
    """
    parser = argparse.ArgumentParser(
        prog="bddn",
        description="Map vision networks onto the cortex: features (stage one), fit (stage two), figures (stage three).",
    )
    parser.add_argument("--run-root", default=None, help="root folder of all generated data (default: $BDDN_RUN_ROOT, else ./runs)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = [name for name in COMMAND_MODULES if command_name(name) == only] or COMMAND_MODULES
    for module_name in wanted:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        # argparse %-formats a sub-command's help (not its description): a literal "95 %" must reach it as "%%".
        sub = subparsers.add_parser(module.NAME, help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen sub-command; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(only=chosen_command(argv)).parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BddnError as error:
        print(f"bddn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bddn {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"bddn {args.command}: error: {no_space_message(error, args)}", file=sys.stderr)
        return 2


def no_space_message(error: OSError, args: argparse.Namespace) -> str:
    """One line for a full disk: where, how much is free now, and that finished work is kept."""
    run_root = runroot.resolve_run_root(getattr(args, "run_root", None))
    where = error.filename or run_root
    probe = Path(where)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 1e9 if probe.exists() else float("nan")
    return (f"no space left on the device while writing {where} ({free:.2f} GB free there); free space or point "
            f"--run-root at a larger disk and rerun: finished chunks and fits are kept, and the run resumes")


if __name__ == "__main__":
    sys.exit(main())
