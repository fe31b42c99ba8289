"""fsaverage surfaces from files: meshes, per-vertex coordinates and neighbours.

Where meshes come from, in order:

1. A FreeSurfer subject folder ``<subjects_dir>/<mesh>/surf/`` (the ``subjects_dir``
   argument, else ``$SUBJECTS_DIR``), read with nibabel:
   ``{lh,rh}.sphere.reg`` (else ``{lh,rh}.sphere``) for ``sphere``, ``{lh,rh}.inflated``,
   ``{lh,rh}.pial``, ``{lh,rh}.white``, and ``{lh,rh}.sulc`` as sulcal depth when present.
   FreeSurfer ships no flattened fsaverage; a ``flat`` surface is read from a GIfTI file
   ``surf/{lh,rh}.flat.gii`` (e.g. exported from pycortex) when one is there.
2. nilearn's bundled fsaverage5 (offline, inside the nilearn wheel) for ``mesh="fsaverage5"``:
   every kind including ``flat`` and sulcal depth.

fsaverage orders nest (the first 10,242 vertices of fsaverage are fsaverage5, the first
40,962 fsaverage6, at identical positions), so per-vertex look-ups use the smallest
available mesh that holds every requested index: fsaverage (order 7) data restricted to
the fsaverage5 prefix works on the bundled meshes. Anything larger needs a FreeSurfer
``fsaverage6`` or ``fsaverage`` folder; the error says so.

The fsaverage registration sphere is the icosahedron of radius 100, identical for both
hemispheres; :func:`sphere_coordinates` shifts the right hemisphere along x as the
method prescribes so the two do not overlap.

Flat meshes: vertices cut away by the flattening (the medial wall) are in no face;
their z is set to 0 like the rest, so "in some face" is the test for being on the sheet.
"""

from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from cache.errors import InvalidInputError, MissingInputError
from stages.mesh import FSAVERAGE7_VERTICES, HEMISPHERES, MESH_VERTICES, CorticalMesh, HemisphereMesh
from stages.subject import Subject

#: Surface kinds :func:`load_mesh` knows.
KINDS = ("sphere", "flat", "inflated", "pial", "white")
#: The right hemisphere's minimum x is placed at lh_xmin + RH_SHIFT * (lh_xmax - lh_xmin).
RH_SHIFT = 1.5

_ALIASES = {"fsaverage7": "fsaverage"}
_FREESURFER_NAMES = {"sphere": ("sphere.reg", "sphere"), "inflated": ("inflated",), "pial": ("pial",),
                     "white": ("white",), "flat": ("flat.gii",)}
_NILEARN_NAMES = {"sphere": "sphere", "flat": "flat", "inflated": "infl", "pial": "pial", "white": "white"}
_NILEARN_SIDES = {"lh": "left", "rh": "right"}


def load_mesh(mesh: str, kind: str, *, subjects_dir: Path | None = None) -> CorticalMesh:
    """Both hemispheres of one fsaverage order and surface kind.

    Args:
        mesh: ``"fsaverage5"``, ``"fsaverage6"`` or ``"fsaverage"`` (``"fsaverage7"`` is an alias).
        kind: one of :data:`KINDS`.
        subjects_dir: a FreeSurfer subjects folder holding ``<mesh>/surf``; default ``$SUBJECTS_DIR``.

    Returns:
        A :class:`CorticalMesh` whose arrays are read-only (results are cached per call arguments).

    Raises:
        InvalidInputError: unknown mesh or kind, or a surface file with the wrong vertex count.
        MissingInputError: the mesh is neither in the FreeSurfer folder nor bundled.
    """
    mesh = _checked_mesh(mesh)
    if kind not in KINDS:
        raise InvalidInputError(f"unknown surface kind {kind!r}; allowed: {', '.join(KINDS)}")
    folder = _subjects_dir(subjects_dir)
    return _load_mesh_cached(mesh, kind, str(folder) if folder else "")


def mesh_for_indices(fsaverage_index: np.ndarray) -> str:
    """The smallest fsaverage order holding every index (nesting: lower orders are prefixes).

    Args:
        fsaverage_index: integer array of shape (n_vertices,), per-hemisphere indices.

    Returns:
        ``"fsaverage5"`` (all < 10,242), ``"fsaverage6"`` (all < 40,962) or ``"fsaverage"``.
    """
    index = _checked_index(fsaverage_index)
    top = int(index.max()) if index.size else 0
    for mesh, count in MESH_VERTICES.items():
        if top < count:
            return mesh
    raise InvalidInputError(f"fsaverage index {top} is out of range: fsaverage has {FSAVERAGE7_VERTICES} "
                            f"vertices per hemisphere (indices 0..{FSAVERAGE7_VERTICES - 1})")


def surface_coordinates(kind: str, hemisphere: np.ndarray, fsaverage_index: np.ndarray, *,
                        subjects_dir: Path | None = None) -> np.ndarray:
    """Coordinates of the given vertices on one surface kind, each in its own hemisphere's space.

    Args:
        kind: one of :data:`KINDS`.
        hemisphere: array of shape (n_vertices,) of ``"lh"`` / ``"rh"``.
        fsaverage_index: integer array of shape (n_vertices,).

    Returns:
        float32 array of shape (n_vertices, 3), no hemisphere offset applied.
    """
    hemisphere, index = _checked_vertices(hemisphere, fsaverage_index)
    cortical = _smallest_available(mesh_for_indices(index), kind, subjects_dir)
    coords = np.zeros((index.size, 3), dtype=np.float32)
    for side in HEMISPHERES:
        rows = hemisphere == side
        coords[rows] = cortical.hemisphere(side).coords[index[rows]]
    return coords


def sphere_coordinates(hemisphere: np.ndarray, fsaverage_index: np.ndarray, *,
                       subjects_dir: Path | None = None) -> np.ndarray:
    """Registration-sphere coordinates with the method's right-hemisphere shift.

    The right hemisphere is moved along x so that its minimum x (over the given rh
    vertices) sits at ``lh_xmin + 1.5 * (lh_xmax - lh_xmin)`` (over the given lh
    vertices). With vertices of one hemisphere only, nothing is shifted.

    Args:
        hemisphere: array of shape (n_vertices,) of ``"lh"`` / ``"rh"``.
        fsaverage_index: integer array of shape (n_vertices,).

    Returns:
        float32 array of shape (n_vertices, 3).
    """
    hemisphere, index = _checked_vertices(hemisphere, fsaverage_index)
    coords = surface_coordinates("sphere", hemisphere, index, subjects_dir=subjects_dir)
    left, right = hemisphere == "lh", hemisphere == "rh"
    if left.any() and right.any():
        lh_x, rh_x = coords[left, 0], coords[right, 0]
        target = lh_x.min() + RH_SHIFT * (lh_x.max() - lh_x.min())
        coords[right, 0] += target - rh_x.min()
    return coords


def shared_sphere_coordinates(subjects: Sequence[Subject], *, subjects_dir: Path | None = None) -> list[Subject]:
    """The subjects with sphere coordinates from one right-hemisphere shift, computed over all their vertices.

    Each subject's own coordinates shift the right hemisphere by an amount that depends on
    its vertex set, so the same fsaverage vertex sits at different positions in different
    subjects. Selectors shared by a joint fit are functions of position and need one
    position per vertex.
    """
    keys = [s.concatenated_index for s in subjects]
    union, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    hemisphere = np.where(union >= FSAVERAGE7_VERTICES, "rh", "lh")
    coords = sphere_coordinates(hemisphere, union % FSAVERAGE7_VERTICES, subjects_dir=subjects_dir)
    rows = np.split(inverse, np.cumsum([len(k) for k in keys])[:-1])
    return [dataclasses.replace(s, sphere_coords=coords[r]) for s, r in zip(subjects, rows)]


def mesh_neighbours(hemisphere: np.ndarray, fsaverage_index: np.ndarray, *,
                    subjects_dir: Path | None = None) -> np.ndarray:
    """Mesh edges between the given vertices, as pairs of positions in the given arrays.

    Edges come from the faces of the smallest available mesh holding every index (the
    sphere's triangulation, which all closed kinds share). Both directions are listed.

    Args:
        hemisphere: array of shape (n_vertices,) of ``"lh"`` / ``"rh"``.
        fsaverage_index: integer array of shape (n_vertices,).

    Returns:
        int64 array of shape (n_edges, 2), rows sorted, each undirected edge as (i, j) and (j, i).
    """
    hemisphere, index = _checked_vertices(hemisphere, fsaverage_index)
    cortical = _smallest_available(mesh_for_indices(index), "sphere", subjects_dir)
    pairs = []
    for side in HEMISPHERES:
        rows = np.flatnonzero(hemisphere == side)
        if rows.size == 0:
            continue
        half = cortical.hemisphere(side)
        position = np.full(half.n_vertices, -1, dtype=np.int64)
        position[index[rows]] = rows
        faces = position[half.faces]
        edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        edges = edges[(edges >= 0).all(axis=1)]
        pairs.append(np.concatenate([edges, edges[:, ::-1]]))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(pairs), axis=0).astype(np.int64)


# ----------------------------------------------------------------- internals
def _checked_mesh(mesh: str) -> str:
    mesh = _ALIASES.get(mesh, mesh)
    if mesh not in MESH_VERTICES:
        raise InvalidInputError(f"unknown mesh {mesh!r}; allowed: {', '.join(MESH_VERTICES)} (fsaverage7 = fsaverage)")
    return mesh


def _checked_index(fsaverage_index: np.ndarray) -> np.ndarray:
    index = np.asarray(fsaverage_index)
    if index.ndim != 1 or not (index.size == 0 or np.issubdtype(index.dtype, np.integer)):
        raise InvalidInputError(f"fsaverage indices must be a 1-D integer array, got dtype {index.dtype} "
                                f"shape {index.shape}")
    if index.size and index.min() < 0:
        raise InvalidInputError(f"fsaverage index {int(index.min())} is negative; "
                                f"indices are 0..{FSAVERAGE7_VERTICES - 1}")
    return index.astype(np.int64)


def _checked_vertices(hemisphere: np.ndarray, fsaverage_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = _checked_index(fsaverage_index)
    hemisphere = np.asarray(hemisphere).astype(str)
    if hemisphere.shape != index.shape:
        raise InvalidInputError(f"hemisphere labels {hemisphere.shape} and fsaverage indices {index.shape} differ in shape")
    unknown = sorted(set(np.unique(hemisphere)) - set(HEMISPHERES))
    if unknown:
        raise InvalidInputError(f"hemisphere labels must be 'lh' or 'rh', got {unknown[:5]}")
    return hemisphere, index


def _subjects_dir(subjects_dir: Path | None) -> Path | None:
    chosen = subjects_dir or os.environ.get("SUBJECTS_DIR")
    return Path(chosen).expanduser() if chosen else None


def _smallest_available(needed: str, kind: str, subjects_dir: Path | None) -> CorticalMesh:
    """The first loadable mesh among ``needed`` and the larger orders (nesting makes them all valid)."""
    orders = list(MESH_VERTICES)
    for mesh in orders[orders.index(needed):]:
        try:
            return load_mesh(mesh, kind, subjects_dir=subjects_dir)
        except MissingInputError:
            continue
    folder = _subjects_dir(subjects_dir)
    where = f"SUBJECTS_DIR={folder}" if folder else "no SUBJECTS_DIR set"
    raise MissingInputError(
        f"vertex indices reach beyond fsaverage5 (>= {MESH_VERTICES['fsaverage5']}), so the {kind} surface of "
        f"{needed} or a larger fsaverage is needed, and none was found ({where}; only fsaverage5 is bundled). Get FreeSurfer's "
        f"fsaverage subject (it ships with FreeSurfer in $FREESURFER_HOME/subjects/fsaverage) and point "
        f"SUBJECTS_DIR (or --subjects-dir) at the folder that contains it")


@lru_cache(maxsize=32)
def _load_mesh_cached(mesh: str, kind: str, subjects_dir: str) -> CorticalMesh:
    surf = Path(subjects_dir) / mesh / "surf" if subjects_dir else None
    halves = {}
    for side in HEMISPHERES:
        half = _read_freesurfer(surf, side, kind) if surf is not None and surf.is_dir() else None
        if half is None and mesh == "fsaverage5":
            half = _read_bundled(side, kind)
        if half is None:
            raise MissingInputError(_missing_message(mesh, kind, surf))
        if half.n_vertices != MESH_VERTICES[mesh]:
            raise InvalidInputError(f"{kind} surface of {mesh} ({side}) has {half.n_vertices} vertices; "
                                    f"{mesh} has {MESH_VERTICES[mesh]}: the file does not belong to {mesh}")
        halves[side] = half
    return CorticalMesh(mesh=mesh, lh=halves["lh"], rh=halves["rh"])


def _missing_message(mesh: str, kind: str, surf: Path | None) -> str:
    names = " or ".join(f"{{lh,rh}}.{name}" for name in _FREESURFER_NAMES[kind])
    where = f"{surf} has no {names}" if surf is not None else "no SUBJECTS_DIR is set"
    return (f"no {kind} surface for {mesh}: {where}, and only fsaverage5 is bundled. Point SUBJECTS_DIR "
            f"(or --subjects-dir) at a FreeSurfer subjects folder holding {mesh}/surf/ (FreeSurfer ships "
            f"fsaverage in $FREESURFER_HOME/subjects; flat surfaces as GIfTI {{lh,rh}}.flat.gii, e.g. from pycortex)")


def _read_freesurfer(surf: Path, side: str, kind: str) -> HemisphereMesh | None:
    for name in _FREESURFER_NAMES[kind]:
        path = surf / f"{side}.{name}"
        if path.is_file():
            coords, faces = _read_surface_file(path)
            return _hemisphere(side, kind, coords, faces, _read_sulcal_depth(surf / f"{side}.sulc"))
    return None


def _read_sulcal_depth(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        return nib.freesurfer.read_morph_data(str(path))
    except Exception as error:  # nibabel raises many types for a broken file
        raise InvalidInputError(f"cannot read sulcal depth {path}: {error}") from error


def _read_surface_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        if path.name.endswith((".gii", ".gii.gz")):
            image = nib.load(str(path))
            coords = image.agg_data("NIFTI_INTENT_POINTSET")
            faces = image.agg_data("NIFTI_INTENT_TRIANGLE")
        else:
            coords, faces = nib.freesurfer.read_geometry(str(path))
    except Exception as error:  # nibabel raises many types for a broken file
        raise InvalidInputError(f"cannot read surface {path}: {error}") from error
    return np.asarray(coords), np.asarray(faces)


def _read_bundled(side: str, kind: str) -> HemisphereMesh:
    from nilearn.datasets import fetch_surf_fsaverage  # local: nilearn import is slow and only needed here

    bunch = fetch_surf_fsaverage("fsaverage5")
    part = _NILEARN_SIDES[side]
    coords, faces = _read_surface_file(Path(bunch[f"{_NILEARN_NAMES[kind]}_{part}"]))
    sulc = np.asarray(nib.load(bunch[f"sulc_{part}"]).agg_data())
    return _hemisphere(side, kind, coords, faces, sulc)


def _hemisphere(side: str, kind: str, coords: np.ndarray, faces: np.ndarray, sulc: np.ndarray | None) -> HemisphereMesh:
    coords = np.array(coords, dtype=np.float32)
    if kind == "flat":
        coords[:, 2] = 0.0
    arrays = [coords, np.asarray(faces, dtype=np.int64)]
    if sulc is not None:
        arrays.append(np.asarray(sulc, dtype=np.float32).reshape(-1))
    for array in arrays:
        array.flags.writeable = False
    return HemisphereMesh(hemisphere=side, kind=kind, coords=arrays[0], faces=arrays[1],
                          sulcal_depth=arrays[2] if sulc is not None else None)
