"""One way to turn the project's records into JSON: dataclasses, tuples, numpy values and paths.

Every JSON file and attribute the project writes (store provenance, ``fit.json``, configs,
planted truths) goes through these two functions, so a value reads back the same wherever
it was written.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars and arrays, paths and dataclass instances become plain data.

    Raises:
        TypeError: for any other type (as ``json.dumps`` expects of a fallback).
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json_data(value: Any, *, allow_nan: bool = True) -> Any:
    """``value`` exactly as it reads back from JSON: tuples become lists, keys strings, numpy values and paths
    plain Python, dataclasses nested mappings.

    Raises:
        TypeError: a value of a type JSON cannot hold.
        ValueError: NaN or infinity with ``allow_nan=False``, or a circular reference.
    """
    return json.loads(json.dumps(value, allow_nan=allow_nan, default=json_default))
