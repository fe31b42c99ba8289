"""Per-vertex values of a fit -> per-mesh-vertex arrays and face colours of an fsaverage mesh.

A fit's vertices are a subset of fsaverage (``hemisphere`` + ``fsaverage_index`` in order-7
numbering). Lower icosahedral orders nest as a prefix, so any fit can be drawn on the mesh
the user has: vertices beyond the mesh's size are simply not shown (fsaverage7 data on
fsaverage5 shows its fsaverage5 subset).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from cache.errors import InvalidInputError
from stages.mesh import HEMISPHERES, CorticalMesh, HemisphereMesh
from stages.report.colours import scalar_colours


def place_on_mesh(values: np.ndarray, hemisphere: np.ndarray, fsaverage_index: np.ndarray,
                  mesh: CorticalMesh, *, fill: object = np.nan) -> dict[str, np.ndarray]:
    """Scatter per-vertex values onto both hemispheres of ``mesh``.

    Args:
        values: array of shape (n_vertices,) or (n_vertices, k).
        hemisphere: str array of shape (n_vertices,), ``"lh"`` / ``"rh"``.
        fsaverage_index: int array of shape (n_vertices,), index within the hemisphere.
        mesh: the target mesh (its vertex count per hemisphere sets the output length).
        fill: value of mesh vertices the fit does not cover (NaN; ``""`` for string arrays).

    Returns:
        ``{"lh": array (n_mesh_vertices, ...), "rh": ...}``.
    """
    values = np.asarray(values)
    hemisphere = np.asarray(hemisphere).astype(str)
    index = np.asarray(fsaverage_index, dtype=np.int64)
    if len(values) != len(hemisphere) or len(values) != len(index):
        raise InvalidInputError(f"per-vertex arrays differ in length: values {len(values)}, hemisphere "
                                f"{len(hemisphere)}, fsaverage_index {len(index)}")
    unknown = set(np.unique(hemisphere)) - set(HEMISPHERES)
    if unknown:
        raise InvalidInputError(f"hemisphere labels must be 'lh' or 'rh', got {sorted(unknown)}")
    dtype = values.dtype if values.dtype.kind in "OUS" else np.result_type(values.dtype, np.float32)
    placed = {}
    for name in HEMISPHERES:
        n_mesh = mesh.hemisphere(name).n_vertices
        out = np.full((n_mesh,) + values.shape[1:], fill, dtype=object if dtype.kind in "US" else dtype)
        keep = (hemisphere == name) & (index >= 0) & (index < n_mesh)
        out[index[keep]] = values[keep]
        placed[name] = out
    return placed


def vertex_rgba(values: np.ndarray, *, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """RGBA of per-mesh-vertex values: scalars through ``cmap``, RGB/RGBA as given; NaN -> alpha 0.

    Args:
        values: array of shape (n_mesh_vertices,), (n_mesh_vertices, 3) or (n_mesh_vertices, 4).

    Returns:
        float array of shape (n_mesh_vertices, 4) in 0..1.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return scalar_colours(values, cmap=cmap, vmin=vmin, vmax=vmax)
    if values.ndim != 2 or values.shape[1] not in (3, 4):
        raise InvalidInputError(f"per-vertex values must be scalar, RGB or RGBA, got shape {values.shape}")
    valid = np.isfinite(values).all(axis=1)
    rgba = np.zeros((len(values), 4))
    rgba[:, :values.shape[1]] = np.clip(np.nan_to_num(values), 0.0, 1.0)
    if values.shape[1] == 3:
        rgba[:, 3] = 1.0
    rgba[~valid] = 0.0
    return rgba


def value_range(values: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """Finite (min, max) over both hemispheres' scalar values; (0, 1) when none is finite."""
    finite = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values.values()])
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def underlay_grey(hemi: HemisphereMesh) -> np.ndarray:
    """Grey level per mesh vertex (n_mesh_vertices,): light gyri, darker sulci; flat 0.7 without depth."""
    if hemi.sulcal_depth is None:
        return np.full(hemi.n_vertices, 0.7)
    depth = np.asarray(hemi.sulcal_depth, dtype=np.float64)
    spread = np.nanstd(depth) or 1.0
    return 0.68 - 0.14 * np.clip(np.nan_to_num(depth) / spread, -1.0, 1.0)


def face_colours(hemi: HemisphereMesh, rgba: np.ndarray, faces: np.ndarray | None = None) -> np.ndarray:
    """Opaque RGB per face: the mean vertex colour composited over the grey underlay.

    A face shows the overlay only when all three vertices are valid (alpha = their minimum),
    so the mask boundary follows mesh edges instead of fading.

    Args:
        hemi: the hemisphere mesh (for the underlay).
        rgba: float array of shape (n_mesh_vertices, 4).
        faces: int array of shape (n_faces, 3); ``hemi.faces`` when omitted.

    Returns:
        float array of shape (n_faces, 3).
    """
    faces = hemi.faces if faces is None else faces
    grey = underlay_grey(hemi)[faces].mean(axis=1)[:, None]
    colour = rgba[faces, :3].mean(axis=1)
    alpha = rgba[faces, 3].min(axis=1)[:, None]
    return alpha * colour + (1.0 - alpha) * grey
