"""Read a subject from plain files, for data that is neither Algonauts nor NSD.

What the user brings:

- an **images folder**: row i of the responses belongs to the i-th file in sorted
  file-name order (as in Algonauts); ids from :func:`pipeline.imagesets.folder.stable_image_id`;
- **responses**: ``.npy`` of shape (n_images, n_vertices), or Parquet with one numeric
  column per vertex (column order = vertex order);
- a **vertex list**: concatenated fsaverage indices (0..327683, right hemisphere offset
  by +163,842), as ``.npy`` (1-D integers) or ``.txt`` (whitespace-separated integers);
- optionally **ROIs**: JSON ``{"V1": [concatenated indices...], ...}`` (indices not among
  the vertices are ignored, counted in the log);
- optionally a **noise ceiling**: ``.npy`` of shape (n_vertices,), fraction 0..1.

:func:`read_generic_folder` finds these by fixed names in ``<root>/<subject>/``:
``images/``, ``responses.npy`` or ``responses.parquet``, ``vertices.npy`` or
``vertices.txt``, and optional ``rois.json`` and ``noise_ceiling.npy``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cache.errors import InvalidInputError, MissingInputError
from pipeline.imagesets.folder import list_image_files, stable_image_id
from pipeline.subjects.assemble import assemble_subject, finite_vertices, subject_label
from pipeline.subjects.files import check_numeric, load_npy, require_file
from pipeline.subjects.rois import describe_mask, select_vertices
from stages.mesh import FSAVERAGE7_VERTICES
from stages.subject import Subject

log = logging.getLogger(__name__)


def read_generic(images: Path, responses: Path, vertices: Path, *, name: str, rois: Path | None = None,
                 noise_ceiling: Path | None = None, split_seed: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, mask: Sequence[str] | None = None,
                 subjects_dir: Path | None = None) -> Subject:
    """Build a :class:`Subject` from an images folder, a response matrix and a vertex list.

    The test split is a seeded ``test_fraction`` of the images; ``mask`` keeps the union
    of the named ROIs (None keeps every vertex). Vertices with NaN/Inf responses are dropped.
    """
    images, responses, vertices = Path(images), Path(responses), Path(vertices)
    files = list_image_files(images)
    ids = np.array([stable_image_id(path) for path in files], dtype=str)
    matrix = _read_responses(responses)
    concatenated = _read_vertex_list(vertices)
    if matrix.shape[0] != ids.size:
        raise InvalidInputError(f"responses {responses} have {matrix.shape[0]} rows but {images} holds {ids.size} "
                                "images; row i must belong to the i-th image in sorted file-name order")
    if matrix.shape[1] != concatenated.size:
        raise InvalidInputError(f"responses {responses} have {matrix.shape[1]} vertex columns but the vertex list "
                                f"{vertices} names {concatenated.size} vertices; they must match")
    ceiling = None
    if noise_ceiling is not None:
        ceiling = load_npy(Path(noise_ceiling), "noise ceiling")
        check_numeric(ceiling, Path(noise_ceiling), "noise ceiling")
        if ceiling.shape != (concatenated.size,):
            raise InvalidInputError(f"noise ceiling {noise_ceiling} has shape {ceiling.shape}; "
                                    f"expected ({concatenated.size},), one value per vertex")
    keep = finite_vertices([matrix], where=str(responses))
    concatenated = concatenated[keep]
    roi_masks = _read_rois(Path(rois), concatenated) if rois is not None else {}
    selected = select_vertices(mask, roi_masks, {}, concatenated.size)
    concatenated = concatenated[selected]
    is_right = concatenated >= FSAVERAGE7_VERTICES
    return assemble_subject(
        name=name, stimulus_ids=ids, responses=matrix[:, keep][:, selected],
        hemisphere=np.where(is_right, "rh", "lh"), fsaverage_index=concatenated - is_right * FSAVERAGE7_VERTICES,
        rois={k: v[selected] for k, v in roi_masks.items()},
        noise_ceiling=None if ceiling is None else ceiling[keep][selected], test_rows=None,
        split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction, subjects_dir=subjects_dir,
        source={"reader": "generic", "images": str(images), "responses": str(responses), "vertices": str(vertices),
                "rois": str(rois) if rois else "absent", "mask": describe_mask(mask, default="all vertices"),
                "noise_ceiling": str(noise_ceiling) if noise_ceiling else "absent"},
    )


def read_generic_folder(root: Path, subject: int | str, **options: object) -> Subject:
    """:func:`read_generic` on the fixed file names inside ``<root>/<subject>/`` (see module docstring).

    ``subject`` ``1`` means ``subj01``; other names are used as given. ``options`` are
    :func:`read_generic`'s keyword options (splits, mask, subjects_dir).
    """
    name = subject_label(subject)
    folder = Path(root) / name
    if not folder.is_dir():
        raise MissingInputError(f"generic subject folder {folder} does not exist; expected images/, "
                                "responses.npy|responses.parquet and vertices.npy|vertices.txt inside it")
    rois = folder / "rois.json"
    ceiling = folder / "noise_ceiling.npy"
    return read_generic(folder / "images", _one_of(folder, ("responses.npy", "responses.parquet")),
                        _one_of(folder, ("vertices.npy", "vertices.txt")), name=name,
                        rois=rois if rois.is_file() else None, noise_ceiling=ceiling if ceiling.is_file() else None,
                        **options)


def _one_of(folder: Path, names: tuple[str, ...]) -> Path:
    found = [folder / n for n in names if (folder / n).is_file()]
    if len(found) != 1:
        problem = "none" if not found else "more than one"
        raise MissingInputError(f"{folder}: expected exactly one of {list(names)}, found {problem}")
    return found[0]


def _read_responses(path: Path) -> np.ndarray:
    """Responses as an array of shape (n_images, n_vertices) (memory-mapped for ``.npy``)."""
    if path.suffix == ".npy":
        matrix = load_npy(path, "responses", mmap=True)
        check_numeric(matrix, path, "responses")
        if matrix.ndim != 2 or matrix.dtype.kind == "b":
            raise InvalidInputError(f"responses {path} have shape {matrix.shape} and dtype {matrix.dtype}; "
                                    "expected a 2-D float array (n_images, n_vertices)")
        return matrix
    if path.suffix == ".parquet":
        require_file(path, "responses")
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as error:
            raise InvalidInputError(f"responses {path} is not a readable Parquet file ({error})") from None
        bad = [f"{field.name} ({field.type})" for field in table.schema
               if not (pa.types.is_floating(field.type) or pa.types.is_integer(field.type))]
        if bad:
            raise InvalidInputError(f"responses {path}: columns must be numeric, one per vertex; not numeric: "
                                    + ", ".join(bad[:5]))
        if table.num_columns == 0:
            raise InvalidInputError(f"responses {path} have no columns")
        return np.column_stack([table.column(i).to_numpy(zero_copy_only=False).astype(np.float32)
                                for i in range(table.num_columns)])
    raise InvalidInputError(f"responses {path}: unsupported file type {path.suffix!r}; use .npy or .parquet")


def _read_vertex_list(path: Path) -> np.ndarray:
    """int64 array of shape (n_vertices,): concatenated fsaverage indices, unique and in range."""
    if path.suffix == ".npy":
        values = load_npy(path, "vertex list")
        if values.dtype.kind not in "iu" or values.ndim != 1:
            raise InvalidInputError(f"vertex list {path} has shape {values.shape} and dtype {values.dtype}; "
                                    "expected a 1-D integer array")
    elif path.suffix == ".txt":
        tokens = require_file(path, "vertex list").read_text(encoding="utf-8").split()
        bad = [t for t in tokens if not t.isdigit()]
        if bad:
            raise InvalidInputError(f"vertex list {path} holds non-integer entries, e.g. {bad[:3]}")
        values = np.array([int(t) for t in tokens], dtype=np.int64)
    else:
        raise InvalidInputError(f"vertex list {path}: unsupported file type {path.suffix!r}; use .npy or .txt")
    values = values.astype(np.int64)
    limit = 2 * FSAVERAGE7_VERTICES
    if values.size == 0 or values.min() < 0 or values.max() >= limit:
        raise InvalidInputError(f"vertex list {path} must hold concatenated fsaverage indices in 0..{limit - 1} "
                                f"(left hemisphere first, right offset by {FSAVERAGE7_VERTICES})")
    if np.unique(values).size != values.size:
        raise InvalidInputError(f"vertex list {path} names a vertex twice")
    return values


def _read_rois(path: Path, concatenated: np.ndarray) -> dict[str, np.ndarray]:
    """ROI name -> bool mask over ``concatenated`` from a JSON file of name -> concatenated indices."""
    try:
        content = json.loads(require_file(path, "ROI file").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"ROI file {path} is not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise InvalidInputError(f"ROI file {path} must hold an object mapping ROI name -> list of vertex indices")
    rois = {}
    for roi, indices in content.items():
        if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise InvalidInputError(f"ROI file {path}: ROI {roi!r} must map to a list of integer vertex indices")
        listed = np.asarray(indices, dtype=np.int64)
        outside = int((~np.isin(listed, concatenated)).sum())
        if outside:
            log.info("ROI file %s: %d indices of ROI %r are not among the subject's vertices", path, outside, roi)
        rois[roi] = np.isin(concatenated, listed)
    return rois
