"""Build the frozen config dataclasses that stages own, once, at the door: defaults, then preset tables, then flags.

Every source of settings is a table (a mapping, nested for nested configs): a built-in
preset such as the fit's reference constants, a user's TOML preset, the flags the user
gave (:func:`given_flags`). :func:`build_config` merges them in one step, later tables
winning key by key, and constructs the dataclass; unknown keys and wrong types fail at
construction with a message naming the key, the value and what is allowed. The resolved
config is plain JSON (``cache.jsondata.to_json_data``) so it can be written into every output.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cache.errors import ConfigError, MissingInputError
from stages.device import parse_precision

T = TypeVar("T")

#: The tables a ``--config`` preset may hold, each read by its command (``[fit]`` and ``[ridge]`` by ``bddn fit``,
#: ``[figures]`` by ``bddn figures`` and ``bddn compare``), so one file can serve several commands.
PRESET_TABLES = ("features", "synth", "fit", "ridge", "figures")


def build_config(cls: type[T], *tables: Mapping[str, Any] | None, where: str = "config") -> T:
    """Instantiate the dataclass ``cls`` from its defaults overlaid by each table in turn (``None`` = no table).

    Later tables win key by key; nested tables (for nested dataclass fields) are merged,
    not replaced. A key present in a table is a value, ``None`` included (it is checked
    against the field's type: only optional fields take it); flags the user did not give
    are left out of their table by :func:`given_flags`.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for key, value in merge_tables(*tables).items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{_did_you_mean(key, fields)}; allowed keys: "
                              f"{', '.join(sorted(fields))}")
        values[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def merge_tables(*tables: Mapping[str, Any] | None) -> dict[str, Any]:
    """One table from several: later tables win key by key, nested tables merged (``None`` tables skipped)."""
    merged: dict[str, Any] = {}
    for table in tables:
        for key, value in (table or {}).items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = merge_tables(merged[key], value)
            else:
                merged[key] = dict(value) if isinstance(value, Mapping) else value
    return merged


def given_flags(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The table of the flags the user gave among ``names`` (argparse destinations whose default is ``None``;
    a name the parser does not have counts as not given).

    A dotted name (``"model.scale_mode"``) lands in a nested table (``{"model": {"scale_mode": ...}}``).
    """
    table: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        *parents, leaf = name.split(".")
        node = table
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return table


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML preset file into a mapping of its tables (sub-tables become nested mappings).

    Every top-level entry must be one of :data:`PRESET_TABLES`: a misspelt table (``[fitt]``) or a setting outside
    any table would otherwise be ignored without a word; the error names the closest known table.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"config preset {path} does not exist")
    try:
        preset = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config preset {path} is not valid TOML: {error}") from error
    known = ", ".join(f"[{name}]" for name in PRESET_TABLES)
    for key, value in preset.items():
        if not isinstance(value, dict):
            raise ConfigError(f"config preset {path}: {key!r} = {value!r} sits outside a table; settings go under "
                              f"one of {known}")
        if key not in PRESET_TABLES:
            raise ConfigError(f"config preset {path}: unknown table [{key}]"
                              f"{_did_you_mean(key, PRESET_TABLES, brackets=True)}; known tables: {known}")
    return preset


def _did_you_mean(name: str, known: Iterable[str], *, brackets: bool = False) -> str:
    """`` (did you mean 'x'?)`` naming the known name closest to a misspelt ``name`` (``[x]`` for a table), or
    ``""`` when none is close."""
    match = difflib.get_close_matches(name, list(known), n=1)
    if not match:
        return ""
    return f" (did you mean [{match[0]}]?)" if brackets else f" (did you mean {match[0]!r}?)"


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


def precision_flag(text: str) -> str:
    """argparse type of ``--precision`` (and stage one's ``--autocast``): a precision in the one vocabulary of
    ``stages.device``, earlier spellings such as ``off`` accepted."""
    try:
        return parse_precision(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
