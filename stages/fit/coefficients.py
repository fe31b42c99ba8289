"""A ridge fit's read-out on disk, ``coefficients.safetensors``: what predicting new images needs.

Every vertex of a ridge or banded-ridge fit predicts ``y = sum_f w_f * norm_f(x_f) + intercept``
over the feature blocks its chosen model reads (``stages.fit.ridge_features``): ridge reads one
block, the (layer, feature set) it chose; banded ridge reads the bands of the layers its chosen band
weights do not zero, the band weights (and the ``1/sqrt(2)`` of a ``"both"`` band) folded into ``w``.
Vertices that read the same blocks form a :class:`ReadoutGroup` and share one weight matrix, so
only the chosen blocks are stored (at 37,984 vertices and 768 channels a full per-layer global
matrix would be 117 MB a layer; grouped, every vertex stores its own block only).

==============================================  =========================  ==========================
tensor                                          shape                      role
==============================================  =========================  ==========================
``intercept``                                   (n_vertices,) float64      training mean of responses
``normalisation.<set>.<layer>.mean`` / ``.scale``  (n_features,) float64   :class:`Normalisation`
``group.<g>.vertices``                          (n_group,) int64           the group's vertices
``group.<g>.weight``                            (n_group, n_features) f32  its read-out weights
==============================================  =========================  ==========================

The header's metadata records ``method``, ``model``, ``subject``, ``layer_names``, the ``grid`` and
``local_pool`` the features are read with, and each group's blocks as JSON ``[[set, layer], ...]``
(``layer`` indexes ``layer_names``). Written beside its place and renamed; read with safetensors
only (no pickle) and checked: every vertex in exactly one group, widths that agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cache.errors import InvalidInputError, MissingInputError
from stages.fit.result import FitResult
from stages.fit.ridge_features import FEATURE_SETS, Normalisation

COEFFICIENTS_FILE = "coefficients.safetensors"

#: A feature block: (feature set, layer position among the fit's layers).
Block = tuple[str, int]


@dataclass(frozen=True)
class ReadoutGroup:
    """Vertices that read the same feature blocks.

    Attributes:
        vertices: int64 array of shape (n_group,), the vertices' rows in the fit's table.
        blocks: the blocks read, concatenated in this order.
        weights: float32 array of shape (n_group, n_features), n_features the blocks' widths summed.
    """

    vertices: np.ndarray
    blocks: tuple[Block, ...]
    weights: np.ndarray


@dataclass(frozen=True)
class RidgeCoefficients:
    """Everything a ridge fit needs to predict (see module docs).

    Attributes:
        grid: the stored local grid the features are read at.
        local_pool: side of the pooled local grid.
        intercept: float64 array of shape (n_vertices,).
        normalisations: block -> its training statistics (the blocks some group reads).
        groups: every vertex in exactly one.
    """

    grid: int
    local_pool: int
    intercept: np.ndarray
    normalisations: dict[Block, Normalisation]
    groups: tuple[ReadoutGroup, ...]

    @property
    def n_vertices(self) -> int:
        return int(self.intercept.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the weight matrices."""
        return sum(group.weights.nbytes for group in self.groups)


@dataclass
class RidgeFit(FitResult):
    """A ridge or banded-ridge FitResult with its read-out; ``save`` writes ``coefficients.safetensors`` before
    the table and ``fit.json`` (the completion marker), so a folder with ``fit.json`` can predict."""

    coefficients: RidgeCoefficients | None = field(default=None, repr=False)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.coefficients is not None:
            write_coefficients(directory, self.coefficients, method=self.method, model=self.model,
                               subject=self.subject, layer_names=self.layer_names)
        return super().save(directory)


def write_coefficients(directory: Path, coefficients: RidgeCoefficients, *, method: str, model: str, subject: str,
                       layer_names: tuple[str, ...]) -> Path:
    """Write ``directory/coefficients.safetensors`` (complete or not at all); returns its path."""
    from safetensors.numpy import save_file

    tensors = {"intercept": np.ascontiguousarray(coefficients.intercept, dtype=np.float64)}
    for (name, layer), norm in coefficients.normalisations.items():
        tensors[f"normalisation.{name}.{layer}.mean"] = norm.mean.cpu().numpy().astype(np.float64)
        tensors[f"normalisation.{name}.{layer}.scale"] = norm.scale.cpu().numpy().astype(np.float64)
    for index, group in enumerate(coefficients.groups):
        tensors[f"group.{index}.vertices"] = np.ascontiguousarray(group.vertices, dtype=np.int64)
        tensors[f"group.{index}.weight"] = np.ascontiguousarray(group.weights, dtype=np.float32)
    metadata = {"method": method, "model": model, "subject": subject, "layer_names": json.dumps(list(layer_names)),
                "grid": str(coefficients.grid), "local_pool": str(coefficients.local_pool),
                "groups": json.dumps([[list(block) for block in group.blocks] for group in coefficients.groups])}
    path = Path(directory) / COEFFICIENTS_FILE
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    return partial.replace(path)


def read_coefficients(directory: Path, *, n_vertices: int, layer_names: tuple[str, ...]) -> RidgeCoefficients:
    """The read-out in ``directory/coefficients.safetensors``, checked against the fit's table.

    Raises:
        MissingInputError: the folder has no coefficient file (a ridge fit written before fits kept one).
        InvalidInputError: the file is truncated, not safetensors, or inconsistent (naming the file).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(directory) / COEFFICIENTS_FILE
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: this ridge fit keeps no coefficients (fitted before ridge "
                                "fits kept them, or the file was removed); fit it again with `bddn fit`")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        grid, pool = int(metadata["grid"]), int(metadata["local_pool"])
        blocks = [tuple((str(name), int(layer)) for name, layer in group) for group in json.loads(metadata["groups"])]
        recorded = tuple(json.loads(metadata["layer_names"]))
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as error:
        reason = str(error)[:120] or type(error).__name__
        raise InvalidInputError(f"{path} is not a readable coefficient file ({reason}); it is truncated or corrupt: "
                                "fit again with `bddn fit`") from None
    if recorded != tuple(layer_names):
        raise InvalidInputError(f"{path} was written for layers {list(recorded)}, the fit's table has "
                                f"{list(layer_names)}: they are not from one fit; fit again")
    coefficients = _assemble(path, tensors, blocks, grid=grid, pool=pool, n_layers=len(layer_names))
    if coefficients.n_vertices != n_vertices:
        raise InvalidInputError(f"{path} holds {coefficients.n_vertices} vertices, the fit's table {n_vertices}: "
                                "they are not from one fit; fit again")
    return coefficients


def _assemble(path: Path, tensors: dict[str, np.ndarray], blocks: list[tuple[Block, ...]], *, grid: int, pool: int,
              n_layers: int) -> RidgeCoefficients:
    """The coefficients from the file's tensors, every inconsistency an InvalidInputError naming ``path``."""
    def bad(what: str) -> InvalidInputError:
        return InvalidInputError(f"{path} is inconsistent: {what}; it is damaged: fit again with `bddn fit`")

    if "intercept" not in tensors:
        raise bad("no intercept")
    intercept = np.asarray(tensors["intercept"], dtype=np.float64)
    normalisations: dict[Block, Normalisation] = {}
    groups = []
    seen = np.zeros(len(intercept), dtype=np.int64)
    for index, group_blocks in enumerate(blocks):
        vertices, weights = tensors.get(f"group.{index}.vertices"), tensors.get(f"group.{index}.weight")
        if vertices is None or weights is None or weights.ndim != 2 or len(vertices) != len(weights):
            raise bad(f"group {index} lacks its vertices or weights, or their lengths differ")
        if len(vertices) and (vertices.min() < 0 or vertices.max() >= len(intercept)):
            raise bad(f"group {index} names vertices outside 0..{len(intercept) - 1}")
        width = 0
        for block in group_blocks:
            name, layer = block
            if name not in FEATURE_SETS or not 0 <= layer < n_layers:
                raise bad(f"group {index} reads an unknown block {list(block)}")
            if block not in normalisations:
                mean, scale = (tensors.get(f"normalisation.{name}.{layer}.{part}") for part in ("mean", "scale"))
                if mean is None or scale is None or mean.shape != scale.shape:
                    raise bad(f"no normalisation for block {list(block)}")
                normalisations[block] = Normalisation(mean=torch.from_numpy(mean.astype(np.float64)),
                                                      scale=torch.from_numpy(scale.astype(np.float64)))
            width += normalisations[block].mean.shape[0]
        if weights.shape[1] != width:
            raise bad(f"group {index} has {weights.shape[1]} weights per vertex for blocks of {width} features")
        np.add.at(seen, vertices, 1)
        groups.append(ReadoutGroup(vertices=np.asarray(vertices, dtype=np.int64), blocks=group_blocks,
                                   weights=np.asarray(weights, dtype=np.float32)))
    if (seen != 1).any():
        raise bad(f"{int((seen == 0).sum())} vertices in no group, {int((seen > 1).sum())} in several")
    return RidgeCoefficients(grid=grid, local_pool=pool, intercept=intercept, normalisations=normalisations,
                             groups=tuple(groups))
