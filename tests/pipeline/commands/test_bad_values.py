"""Bad values at the door end in one line (exit 2) naming the value and what is allowed, never in a traceback:
non-finite or out-of-range floats, an unbounded store grid, a ``fit.json`` with wrong types, a misspelt preset
table; and a config error says where it comes from once."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import cli
from stages.features.token_grids import MAX_GRID
from stages.fit.config import FLOAT_RANGES, FitConfig
from stages.fit.result import FIT_JSON, FitResult, layer_summary, layer_weight_column
from stages.models.registry import list_models


def _error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``bddn argv``; assert it exits 2 with exactly one line on stderr and return that line."""
    assert cli.main(list(argv)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.endswith("\n"), error
    return error.strip()


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "nan"], "fit config: lr = nan: must be a finite number > 0"),
    (["--lr", "inf"], "fit config: lr = inf: must be a finite number > 0"),
    (["--selector-lr", "nan"], "fit config: selector_lr = nan: must be a finite number > 0"),
    (["--smoothness", "nan"], "fit config: smoothness_weight = nan: must be a finite number >= 0"),
    (["--epochs", "0"], "fit config: epochs must be a positive integer, got 0"),
])
def test_fit_values_are_finite_and_in_range(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
                                            message: str) -> None:
    line = _error_line(capsys, "--run-root", str(tmp_path), "fit", *flags)
    assert line == f"bddn fit: error: {message}"   # the prefix once, not "fit config: fit config: ..."


def test_every_float_setting_of_the_fit_has_a_range() -> None:
    floats = {name for name, hint in typing.get_type_hints(FitConfig).items()
              if hint is float or float in typing.get_args(hint)}
    assert floats == set(FLOAT_RANGES)


def test_ridge_values_are_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text("[ridge]\nalphas = [1.0, nan]\n")
    line = _error_line(capsys, "--run-root", str(tmp_path), "fit", "--method", "ridge", "--config", str(preset))
    assert line == "bddn fit: error: ridge config: alphas = nan: must be a finite number > 0"


def test_store_grid_is_bounded_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "stimuli"
    folder.mkdir()
    Image.new("RGB", (40, 40)).save(folder / "a.png")
    line = _error_line(capsys, "--run-root", str(tmp_path / "runs"), "features", "--images", str(folder),
                       "--model", "timm:test_vit", "--random-init", "--grid", "8,100000")
    assert f"grids [8, 100000]: each must be 1..{MAX_GRID} cells a side" in line
    assert "finest token grid of any registered model" in line
    assert not (tmp_path / "runs" / "features").exists()


def test_grid_bound_is_the_finest_registered_token_grid() -> None:
    assert MAX_GRID == max(max(spec.grids) for spec in list_models())


def _tiny_fit(folder: Path) -> Path:
    vertices = {"vertex": np.arange(3), "hemisphere": np.array(["lh", "lh", "rh"]),
                "fsaverage_index": np.arange(3), "roi": np.array(["V1v", "V2d", "V3v"]),
                "space_x": np.zeros(3), "space_y": np.zeros(3), "scale": np.zeros(3)}
    weights = np.full((3, 2), 0.5)
    vertices |= {layer_weight_column(i): weights[:, i] for i in range(2)} | layer_summary(weights)
    return FitResult(method="ridge", subject="subj01", model="toy", layer_names=("a", "b"), vertices=vertices).save(folder)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("layer_names", 5, "field 'layer_names' is int 5; expected a list of strings"),
    ("layer_names", ["a", 2], "field 'layer_names' is list [\"a\", 2]; expected a list of strings"),
    ("subject", 7, "field 'subject' is int 7; expected a string"),
    ("metrics", [1], "field 'metrics' is list [1]; expected an object"),
])
def test_fit_json_with_wrong_types_names_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        field: str, value: object, expected: str) -> None:
    folder = _tiny_fit(tmp_path / "fit")
    header = json.loads((folder / FIT_JSON).read_text())
    (folder / FIT_JSON).write_text(json.dumps(header | {field: value}))
    line = _error_line(capsys, "--run-root", str(tmp_path), "figures", str(folder), "--no-progress")
    assert line.startswith(f"bddn figures: error: {folder / FIT_JSON}: {expected}")


@pytest.mark.parametrize(("text", "expected"), [
    ("[fitt]\nlr = 0.1\n", "unknown table [fitt] (did you mean [fit]?)"),
    ("lr = 0.1\n[fit]\nepochs = 2\n", "'lr' = 0.1 sits outside a table"),
    ("[fit]\nmodle = {bottleneck = 3}\n", "fit config: unknown key 'modle' (did you mean 'model'?)"),
])
def test_misspelt_preset_tables_and_keys_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                                     expected: str) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text(text)
    assert expected in _error_line(capsys, "--run-root", str(tmp_path), "fit", "--config", str(preset))
