"""Build the frozen config dataclasses that stages own: defaults, then a TOML preset, then flags.

Unknown keys and wrong types fail at construction with a message naming the key,
the value and what is allowed. The resolved config is plain JSON (``config_to_dict``)
so it can be written into every output.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from cache.errors import ConfigError, MissingInputError

T = TypeVar("T")


def build_config(cls: type[T], *layers: dict[str, Any] | None, where: str = "config") -> T:
    """Instantiate the dataclass ``cls`` from its defaults overlaid by each mapping in turn.

    Later layers win; ``None`` values in a layer mean "not given" and are skipped, so
    argparse namespaces can be passed straight through. Nested dataclass fields take
    nested mappings.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                continue
            if key not in fields:
                allowed = ", ".join(sorted(fields))
                raise ConfigError(f"{where}: unknown key {key!r}; allowed keys: {allowed}")
            values[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML preset file into a mapping (sections become nested mappings)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"config preset {path} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config preset {path} is not valid TOML: {error}") from error


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as JSON-ready nested mappings (tuples become lists)."""
    return _jsonable(dataclasses.asdict(config))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type hint, converting only lossless cases (int -> float, list -> tuple)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {hint}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(item, args[0], where) for item in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(item, arg, where) for item, arg in zip(args, value))
        item_hint = args[0] if args else Any
        items = [_coerce(item, item_hint, where) for item in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return build_config(hint, value, where=where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if isinstance(hint, type):
        if hint is int and isinstance(value, bool):
            raise ConfigError(f"{where}: expected int, got {value!r}")
        if not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value
