"""``bddn models``: list the named feature models with their layers, widths and input sizes (no download)."""

from __future__ import annotations

import argparse
import json

from stages.models.registry import list_models

NAME = "models"
HELP = "List the named feature models (family, source, layers, widths, input size); also accepts timm:/hf:/torchvision: ids."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` prints the static metadata as a JSON list instead of a table."""
    parser.add_argument("--json", action="store_true", help="print a JSON list of the model specs instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print the registry; returns the exit status."""
    specs = list_models()
    if args.json:
        print(json.dumps([spec.to_dict() for spec in specs], indent=2))
        return 0
    rows = [("NAME", "FAMILY", "SOURCE", "LAYERS", "WIDTHS", "INPUT", "GRID", "NOTES")]
    for spec in specs:
        rows.append((spec.name, spec.family, f"{spec.library}:{spec.source}", str(spec.n_layers), _compact(spec.widths),
                     "x".join(map(str, spec.input_size)), _grid_range(spec.grids), spec.notes))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print("\nAlso: timm:<name>, hf:<repo id or local dir>, torchvision:<name>[.<WEIGHTS>] "
          "(e.g. timm:vit_small_patch16_224, hf:facebook/dinov2-small, torchvision:resnet50).")
    return 0


def _compact(widths: tuple[int, ...]) -> str:
    """``12x768`` for uniform widths, else the distinct widths in order (``32..1280``)."""
    if len(set(widths)) == 1:
        return f"{len(widths)}x{widths[0]}"
    return f"{min(widths)}..{max(widths)}"


def _grid_range(grids: tuple[int, ...]) -> str:
    return str(grids[0]) if len(set(grids)) == 1 else f"{max(grids)}..{min(grids)}"
