"""Checked loading of the array files subject readers meet: every failure names the file.

``.npy`` files are read with ``allow_pickle=False``. The one exception is the
Algonauts ``mapping_<class>.npy`` (a pickled dict of label -> ROI name): it is
read by :func:`load_label_mapping` with an unpickler that admits only the few
numpy constructors an object array of ints and strings needs, so a crafted file
cannot run code, and the result must be a plain dict of int -> str.
"""

from __future__ import annotations

import io
import numbers
import pickle
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from cache.errors import InvalidInputError, MissingInputError
from stages.mesh import FSAVERAGE7_VERTICES

#: The only globals a pickled 0-d object array holding a dict of ints and strings refers to.
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else MissingInputError saying what it should hold."""
    if not path.is_file():
        raise MissingInputError(f"missing {what}: {path} does not exist")
    return path


def load_npy(path: Path, what: str, *, mmap: bool = False) -> np.ndarray:
    """A ``.npy`` array without pickle (MissingInputError / InvalidInputError naming ``path``).

    ``mmap=True`` maps the file read-only instead of reading it, for large response arrays.
    """
    require_file(path, what)
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as error:
        raise InvalidInputError(f"{what} {path} cannot be read as a plain .npy array ({error}); "
                                "it must hold numbers, not pickled objects") from None
    except (OSError, EOFError) as error:
        raise InvalidInputError(f"{what} {path} is not a readable .npy file ({error})") from None


def check_numeric(array: np.ndarray, path: Path, what: str) -> None:
    """InvalidInputError unless ``array`` has a real numeric dtype (int, uint, float; bool for masks)."""
    if array.dtype.kind not in "biuf":
        raise InvalidInputError(f"{what} {path} has dtype {array.dtype}; a numeric (int or float) array is required")


def check_surface_labels(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """A full-hemisphere integer label array: 1-D, length 163,842, numeric, whole numbers.

    Returns the labels as int64 of shape (163842,).
    """
    check_numeric(array, path, what)
    array = np.asarray(array)
    if array.ndim != 1 or array.shape[0] != FSAVERAGE7_VERTICES:
        raise InvalidInputError(f"{what} {path} has shape {array.shape}; expected ({FSAVERAGE7_VERTICES},), "
                                "one value per fsaverage vertex of one hemisphere")
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and np.array_equal(array, np.round(array))):
        raise InvalidInputError(f"{what} {path} holds non-integer or non-finite values; labels must be whole numbers")
    return array.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_label_mapping(path: Path) -> dict[int, str]:
    """The label -> ROI name dict of an Algonauts ``mapping_<class>.npy`` (a pickled 0-d object array).

    Raises MissingInputError if absent and InvalidInputError if the file is anything other
    than a pickled plain dict of int -> str.
    """
    require_file(path, "ROI name mapping")
    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            if dtype.hasobject:
                payload = _NumpyOnlyUnpickler(io.BytesIO(handle.read())).load()
            else:
                payload = None
    except (ValueError, OSError, EOFError, pickle.UnpicklingError, AttributeError, TypeError) as error:
        raise InvalidInputError(f"ROI name mapping {path} is not a pickled dict of label -> name ({error})") from None
    if isinstance(payload, np.ndarray) and payload.shape == () and payload.dtype.hasobject:
        payload = payload.item()
    if type(payload) is not dict:
        kind = type(payload).__name__ if payload is not None else f"a numeric array of shape {shape}"
        raise InvalidInputError(f"ROI name mapping {path} holds {kind}; expected a plain dict of int label -> str name")
    mapping: dict[int, str] = {}
    for label, name in payload.items():
        if not isinstance(label, numbers.Integral) or isinstance(label, bool) or not isinstance(name, str):
            raise InvalidInputError(f"ROI name mapping {path} has entry {label!r}: {name!r}; "
                                    "expected int label -> str name")
        mapping[int(label)] = str(name)
    return mapping
