"""The result of fitting one subject: per-vertex selections and scores, plus what produced them.

Every method (FactorTopy, ridge baselines) returns a :class:`FitResult`; the
planted truth of a synthetic subject is written in the same per-vertex columns, so
stage three draws fits and truths alike. On disk a fit is a folder:
``vertices.parquet`` (the per-vertex table), ``fit.json`` (config, metrics,
provenance) and, for trained models, the weights file (:mod:`stages.fit.weights_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.numpy import load_file, save_file

from cache.errors import InvalidInputError, MissingInputError
from cache.jsondata import json_default

VERTEX_TABLE = "vertices.parquet"
FIT_JSON = "fit.json"
REPLICATES_FILE = "replicates.safetensors"

#: Columns every per-vertex table carries (fits and planted truths).
REQUIRED_COLUMNS = ("vertex", "hemisphere", "fsaverage_index", "roi", "layer_argmax", "layer_entropy",
                    "layer_mean", "space_x", "space_y", "scale")


def layer_weight_column(layer: int) -> str:
    """Name of the per-vertex column holding the softmax weight of ``layer``."""
    return f"layer_weight_{layer:02d}"


def layer_summary(layer_weights: np.ndarray) -> dict[str, np.ndarray]:
    """Argmax, normalised entropy (0 one-hot .. 1 uniform) and expected index of layer weights.

    Args:
        layer_weights: array of shape (n_vertices, n_layers), rows summing to 1.
    """
    weights = np.clip(np.asarray(layer_weights, dtype=np.float64), 0.0, None)
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    n_layers = weights.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(weights > 0, weights * np.log(weights), 0.0)
    entropy = -plogp.sum(axis=1) / np.log(n_layers) if n_layers > 1 else np.zeros(len(weights))
    return {
        "layer_argmax": weights.argmax(axis=1).astype(np.int32),
        "layer_entropy": entropy.astype(np.float32),
        "layer_mean": (weights @ np.arange(n_layers)).astype(np.float32),
    }


@dataclass
class FitResult:
    """Per-vertex selections and scores of one fit.

    Attributes:
        method: ``"factortopy"``, ``"factortopy-joint"`` (one subject of a joint fit, see
            ``stages.fit.multisubject``), ``"ridge"``, ``"banded-ridge"`` or ``"truth"``.
        subject: subject label.
        model: feature model id.
        layer_names: names of the layers the weights refer to.
        vertices: column name -> array of shape (n_vertices,); holds at least
            ``REQUIRED_COLUMNS`` and one ``layer_weight_XX`` column per layer, plus scores
            (``r2_val``, ``r_val``, ``r2_test``, ``r_test``, ``noise_ceiling``,
            ``r2_test_nc``) where the method has them.
        metrics: summary numbers (mean scores, epochs, timings).
        config: the resolved config that produced the fit.
        provenance: model, store, subject and package versions.
        replicates: column name -> float32 array of shape (n_resamples, n_vertices), bootstrap
            replicates of a per-vertex score over held-out images (``r2_test``, see
            ``stages.fit.significance``); written as ``replicates.safetensors``, empty when none.
    """

    method: str
    subject: str
    model: str
    layer_names: tuple[str, ...]
    vertices: dict[str, np.ndarray]
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        missing = [name for name in REQUIRED_COLUMNS if name not in self.vertices]
        missing += [layer_weight_column(i) for i in range(len(self.layer_names))
                    if layer_weight_column(i) not in self.vertices]
        if missing:
            raise InvalidInputError(f"fit of {self.subject}/{self.model} lacks per-vertex columns: {', '.join(missing)}")
        lengths = {len(values) for values in self.vertices.values()}
        if len(lengths) != 1:
            raise InvalidInputError(f"fit of {self.subject}/{self.model}: per-vertex columns differ in length {sorted(lengths)}")
        for name, values in self.replicates.items():
            if np.ndim(values) != 2 or np.shape(values)[1] != self.n_vertices:
                raise InvalidInputError(f"fit of {self.subject}/{self.model}: replicates {name!r} have shape "
                                        f"{np.shape(values)}; expected (n_resamples, {self.n_vertices})")

    @property
    def n_vertices(self) -> int:
        return len(self.vertices["vertex"])

    @property
    def layer_weights(self) -> np.ndarray:
        """float32 array of shape (n_vertices, n_layers)."""
        return np.stack([self.vertices[layer_weight_column(i)] for i in range(len(self.layer_names))], axis=1)

    def save(self, directory: str | Path) -> Path:
        """Write the per-vertex table, the replicates and ``fit.json`` into ``directory`` (atomically, file by file;
        ``fit.json`` last)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.replicates:
            arrays = {name: np.ascontiguousarray(values, dtype=np.float32) for name, values in self.replicates.items()}
            _atomic(directory / REPLICATES_FILE, lambda path: save_file(arrays, str(path)))
        table = pa.table({name: np.asarray(values) for name, values in self.vertices.items()})
        _atomic(directory / VERTEX_TABLE, lambda path: pq.write_table(table, path))
        header = {"method": self.method, "subject": self.subject, "model": self.model,
                  "layer_names": list(self.layer_names), "metrics": self.metrics,
                  "config": self.config, "provenance": self.provenance}
        _atomic(directory / FIT_JSON, lambda path: path.write_text(json.dumps(header, indent=2, default=json_default)))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "FitResult":
        """Read a fit folder written by :meth:`save`."""
        header, vertices = read_vertex_folder(Path(directory), FIT_JSON, VERTEX_TABLE, "is not a finished fit")
        _check_header(header, Path(directory) / FIT_JSON)
        replicates = {}
        path = Path(directory) / REPLICATES_FILE
        if path.is_file():
            try:
                replicates = load_file(str(path))
            except Exception as error:   # safetensors' own error for a truncated or altered file, or OSError
                raise InvalidInputError(f"{path} cannot be read ({str(error).strip()[:160] or type(error).__name__}); "
                                        f"delete it to use the fit without score intervals, or re-fit") from error
        return cls(method=header["method"], subject=header["subject"], model=header["model"],
                   layer_names=tuple(header["layer_names"]), vertices=vertices,
                   metrics=header.get("metrics", {}), config=header.get("config", {}),
                   provenance=header.get("provenance", {}), replicates=replicates)


#: The fields of ``fit.json`` that readers use, each with its JSON type and whether it may be absent.
_HEADER_FIELDS: dict[str, tuple[type, bool]] = {
    "method": (str, False), "subject": (str, False), "model": (str, False), "layer_names": (list, False),
    "metrics": (dict, True), "config": (dict, True), "provenance": (dict, True),
}
_JSON_TYPES = {str: "a string", list: "a list of strings", dict: "an object"}


def _check_header(header: Any, path: Path) -> None:
    """Refuse a ``fit.json`` that is valid JSON but not a fit's header (a field missing or of the wrong type), naming
    the file and the field, so readers never fail on it with a ``TypeError`` far from the cause."""
    if not isinstance(header, dict):
        raise InvalidInputError(f"{path} holds {type(header).__name__}, not a fit's JSON object; re-run `bddn fit` "
                                "to write it again")
    for name, (kind, optional) in _HEADER_FIELDS.items():
        if name not in header and optional:
            continue
        value = header.get(name)
        wrong = not isinstance(value, kind) or (kind is list and not all(isinstance(item, str) for item in value))
        if wrong:
            found = "absent" if name not in header else f"{type(value).__name__} {json.dumps(value)[:60]}"
            raise InvalidInputError(f"{path}: field {name!r} is {found}; expected {_JSON_TYPES[kind]} (the file was "
                                    "edited or damaged: restore it, or re-run `bddn fit` to write it again)")


def read_vertex_folder(folder: Path, header_name: str, table_name: str,
                       missing_means: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON header and per-vertex columns of a result folder (a fit or a planted truth).

    A missing file raises MissingInputError naming it and saying ``folder`` ``missing_means``; a
    corrupt header or table raises InvalidInputError naming the file.
    """
    for name in (header_name, table_name):
        if not (folder / name).is_file():
            raise MissingInputError(f"{folder / name} does not exist: {folder} {missing_means}")
    try:
        header = json.loads((folder / header_name).read_text())
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{folder / header_name} is not valid JSON: {error}") from error
    try:
        table = pq.read_table(folder / table_name)
    except (pa.ArrowInvalid, OSError) as error:
        raise InvalidInputError(f"{folder / table_name} is not a readable Parquet table: {error}") from error
    return header, {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _atomic(target: Path, write: Any) -> None:
    partial = target.with_name(target.name + ".partial")
    write(partial)
    partial.replace(target)

