"""Config trees: defaults, then a TOML preset, then flags; unknown keys and wrong types fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from cache.errors import ConfigError, MissingInputError
from pipeline.config import build_config, config_to_dict, load_toml


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


def test_layers_apply_in_order_and_none_means_not_given() -> None:
    config = build_config(_Outer, {"epochs": 3, "inner": {"rate": 1}}, {"epochs": None, "grids": [16, 8]})
    assert config == _Outer(epochs=3, grids=(16, 8), inner=_Inner(rate=1.0))
    assert config_to_dict(config) == {"epochs": 3, "grids": [16, 8], "name": None, "inner": {"rate": 1.0, "mode": "mix"}}


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
    preset.write_text('epochs = 2\n[inner]\nmode = "pyramid"\n')
    assert build_config(_Outer, load_toml(preset)).inner.mode == "pyramid"
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 2\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_toml(broken)
    with pytest.raises(MissingInputError, match="absent.toml"):
        load_toml(tmp_path / "absent.toml")
