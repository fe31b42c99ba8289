"""Config trees: defaults, then preset tables, then the flags given, in one merge; unknown keys and wrong types fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import argparse

import pytest

from cache.errors import ConfigError, MissingInputError
from cache.jsondata import to_json_data
from pipeline.config import PRESET_TABLES, build_config, given_flags, load_toml, precision_flag


@dataclass(frozen=True)
class _Inner:
    rate: float = 1e-3
    mode: Literal["mix", "pyramid"] = "mix"


@dataclass(frozen=True)
class _Outer:
    epochs: int = 10
    grids: tuple[int, ...] = (8,)
    name: str | None = None
    inner: _Inner = field(default_factory=_Inner)


def test_tables_apply_in_order_and_nested_tables_merge() -> None:
    config = build_config(_Outer, {"epochs": 3, "name": "a", "inner": {"rate": 1}}, None,
                          {"grids": [16, 8], "name": None, "inner": {"mode": "pyramid"}})
    assert config == _Outer(epochs=3, grids=(16, 8), name=None, inner=_Inner(rate=1.0, mode="pyramid"))
    assert to_json_data(config) == {"epochs": 3, "grids": [16, 8], "name": None,
                                    "inner": {"rate": 1.0, "mode": "pyramid"}}


def test_none_is_a_value_only_where_the_field_is_optional() -> None:
    with pytest.raises(ConfigError, match="epochs"):
        build_config(_Outer, {"epochs": None})


def test_given_flags_leave_out_what_the_user_did_not_type() -> None:
    args = argparse.Namespace(epochs=None, grids=(4,), **{"inner.mode": "pyramid", "inner.rate": None})
    table = given_flags(args, ("epochs", "grids", "inner.mode", "inner.rate"))
    assert table == {"grids": (4,), "inner": {"mode": "pyramid"}}
    assert build_config(_Outer, {"epochs": 7, "inner": {"rate": 0.5}}, table) == _Outer(
        epochs=7, grids=(4,), inner=_Inner(rate=0.5, mode="pyramid"))


def test_precision_flag_keeps_the_earlier_spelling() -> None:
    assert precision_flag("off") == "fp32" and precision_flag("bf16") == "bf16"
    with pytest.raises(argparse.ArgumentTypeError, match="fp32"):
        precision_flag("half")


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"epoch": 3}, "unknown key 'epoch'"),
        ({"epochs": "3"}, "expected int"),
        ({"epochs": True}, "expected int"),
        ({"grids": 8}, "expected a list"),
        ({"inner": {"mode": "global"}}, "is not one of"),
        ({"inner": {"lr": 1}}, "config.inner: unknown key 'lr'"),
    ],
)
def test_bad_keys_and_types_fail_at_construction(layer: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(_Outer, layer)


def test_toml_preset_is_read_and_errors_name_the_file(tmp_path: Path) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text('[fit]\nepochs = 2\n[fit.inner]\nmode = "pyramid"\n')
    assert build_config(_Outer, load_toml(preset)["fit"]).inner.mode == "pyramid"
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 2\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_toml(broken)
    with pytest.raises(MissingInputError, match="absent.toml"):
        load_toml(tmp_path / "absent.toml")


def test_each_command_reads_a_known_preset_table() -> None:
    from pipeline.commands import features, figures, synth

    assert {features._PRESET_TABLE, figures._PRESET_TABLE, synth._PRESET_TABLE, "fit", "ridge"} == set(PRESET_TABLES)
