"""Result folders replaced only on success: a failed or killed run never destroys a finished result.

A new fit is written into a staging folder under ``<run root>/.staging/`` (outside
``fits/``, so no reader ever discovers it) and swapped in by two renames on the same file
system once it is complete and its scores are finite. Until then the previous fit folder
stays as it was, readable by ``bddn figures``; a run killed at any point leaves it
untouched (and its staging folder, which the next run of that fit clears).

A report shares its folder with others' outputs (``bddn compare`` writes below it), so
:func:`publish_entries` swaps in only the entries the new report wrote, its page last.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cache.errors import InvalidInputError

STAGING_FOLDER = ".staging"
#: Summary scores a fit must have finite before it may replace anything.
CHECKED_METRICS = ("mean_r2_val", "mean_r2_test")


def check_finite_scores(metrics: dict, *, what: str) -> None:
    """Refuse a result whose held-out scores are NaN or infinite: it would be marked complete while wrong."""
    bad = [name for name in CHECKED_METRICS if name in metrics and not math.isfinite(float(metrics[name]))]
    if bad:
        raise InvalidInputError(
            f"{what}: {', '.join(f'{name} = {metrics[name]}' for name in bad)}; a fit with non-finite scores is not "
            "written (the features or responses hold NaN/Inf: check the store with `bddn features --verify` and "
            "the subject's responses); any previous fit is kept")


def _staging(folder: Path, run_root: Path) -> tuple[Path, Path]:
    """Fresh staging and retirement paths for a new version of ``folder`` (leftovers of a killed run removed)."""
    staging_root = run_root / STAGING_FOLDER
    staging_root.mkdir(parents=True, exist_ok=True)
    key = "-".join(folder.relative_to(run_root).parts) if folder.is_relative_to(run_root) else folder.name
    staged, retired = staging_root / f"{key}.new", staging_root / f"{key}.old"
    for leftover in (staged, retired):
        shutil.rmtree(leftover, ignore_errors=True)
    return staged, retired


def _swap(new: Path, target: Path, retired: Path) -> None:
    """Put ``new`` at ``target`` by renames; the old ``target`` goes only once ``new`` is in place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and new.is_dir():
        os.replace(target, retired)
        os.replace(new, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(new, target)


def publish_entries(folder: Path, run_root: Path, write: Callable[[Path], object], *, last: str) -> Path:
    """Write a new report with ``write(staging_folder)``; then replace, entry by entry, what it wrote in
    ``folder`` (entry ``last``, the page that links the rest, at the end). Other entries of ``folder`` stay."""
    staged, retired = _staging(folder, run_root)
    write(staged)
    retired.mkdir(parents=True)
    entries = sorted(staged.iterdir(), key=lambda entry: (entry.name == last, entry.name))
    for entry in entries:
        _swap(entry, folder / entry.name, retired / entry.name)
    shutil.rmtree(staged, ignore_errors=True)
    shutil.rmtree(retired, ignore_errors=True)
    return folder / last


def publish(folder: Path, run_root: Path, write: Callable[[Path], object]) -> Path:
    """Write a new version of ``folder`` with ``write(staging_folder)`` and swap it in; returns ``folder``.

    The previous ``folder`` (with anything else it held, such as a finished run's
    checkpoint folder) is removed only after the new one is in place.
    """
    staged, retired = _staging(folder, run_root)
    write(staged)
    _swap(staged, folder, retired)
    return folder
