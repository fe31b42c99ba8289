"""The subject as data: what stage two needs to fit one brain, wherever it came from.

Readers in ``pipeline/`` (Algonauts 2023, NSD, generic, synthetic) build a
:class:`Subject`; stages consume it without knowing the file layout. Construction
validates every field, so a subject that exists is one a fit can use: shapes agree,
responses are finite float32, vertex identities are unique and in range, and the
splits are disjoint row indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cache.errors import InvalidInputError
from stages.mesh import FSAVERAGE7_VERTICES, HEMISPHERES, MESH_VERTICES

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Subject:
    """One subject's responses and cortical geometry.

    Attributes:
        name: subject label, e.g. ``"subj01"``.
        stimulus_ids: array of shape (n_images,) of str: the feature store's image ids,
            in response row order (unique: repeats are averaged before).
        responses: float32 array of shape (n_images, n_vertices), all finite.
        hemisphere: array of shape (n_vertices,) of str, ``"lh"`` or ``"rh"``.
        fsaverage_index: integer array of shape (n_vertices,): vertex index within its
            hemisphere on fsaverage (order 7 numbering; lower orders nest as a prefix).
        sphere_coords: float32 array of shape (n_vertices, 3): registration-sphere
            coordinates, right hemisphere shifted along x as in the method (the
            selectors' input).
        rois: ROI name -> bool array of shape (n_vertices,).
        splits: ``"train"``, ``"val"``, ``"test"`` -> integer row indices into
            ``responses`` (no row twice, and no row in two splits).
        split_seed: the seed that drew the train/val split (recorded in every fit).
        noise_ceiling: optional float32 array of shape (n_vertices,), fraction of
            variance (0..1) explainable for the averaged responses.
        mesh: the smallest fsaverage mesh holding every vertex (``"fsaverage5"``,
            ``"fsaverage6"`` or ``"fsaverage"``).
        source: where the data came from (reader name and root), for provenance.

    Raises:
        InvalidInputError: at construction, naming the field and what is allowed.
    """

    name: str
    stimulus_ids: np.ndarray
    responses: np.ndarray
    hemisphere: np.ndarray
    fsaverage_index: np.ndarray
    sphere_coords: np.ndarray
    rois: dict[str, np.ndarray]
    splits: dict[str, np.ndarray]
    split_seed: int
    noise_ceiling: np.ndarray | None = None
    mesh: str = "fsaverage"
    source: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInputError(f"subject name must be a non-empty string, got {self.name!r}")
        self._check_responses()
        self._check_stimulus_ids()
        self._check_vertices()
        self._check_rois()
        self._check_splits()
        self._check_noise_ceiling()
        if not isinstance(self.source, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.source.items()):
            raise InvalidInputError(f"subject {self.name}: source must be a dict of str -> str, got {self.source!r}")

    @property
    def n_images(self) -> int:
        return int(self.responses.shape[0])

    @property
    def n_vertices(self) -> int:
        return int(self.responses.shape[1])

    @property
    def concatenated_index(self) -> np.ndarray:
        """int64 array of shape (n_vertices,): index in the both-hemispheres space (rh + 163,842)."""
        offset = np.where(self.hemisphere == "rh", FSAVERAGE7_VERTICES, 0)
        return self.fsaverage_index.astype(np.int64) + offset

    def _fail(self, message: str) -> None:
        raise InvalidInputError(f"subject {self.name}: {message}")

    def _check_responses(self) -> None:
        responses = self.responses
        if not isinstance(responses, np.ndarray) or responses.ndim != 2:
            self._fail(f"responses must be a 2-D array (n_images, n_vertices), got {_describe(responses)}")
        if responses.dtype != np.float32:
            self._fail(f"responses must be float32, got {responses.dtype}; convert with .astype(np.float32)")
        if responses.shape[0] < 1 or responses.shape[1] < 1:
            self._fail(f"responses must hold at least one image and one vertex, got shape {responses.shape}")
        finite = np.isfinite(responses)
        if not finite.all():
            bad = np.flatnonzero(~finite.all(axis=0))
            self._fail(f"responses hold NaN/Inf in {bad.size} vertex columns (first: {bad[:5].tolist()}); "
                       "drop those vertices before building the subject")

    def _check_stimulus_ids(self) -> None:
        ids = self.stimulus_ids
        if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "UOT":
            self._fail(f"stimulus_ids must be a 1-D array of str, got {_describe(ids)}")
        if ids.shape[0] != self.n_images:
            self._fail(f"{ids.shape[0]} stimulus ids for {self.n_images} response rows; they must match")
        if ids.dtype.kind == "O" and not all(isinstance(item, str) for item in ids):
            self._fail("stimulus_ids must all be str")
        unique, counts = np.unique(np.asarray(ids.tolist(), dtype=str), return_counts=True)
        if unique.size != ids.size:
            repeated = unique[counts > 1]
            self._fail(f"stimulus ids repeat ({repeated.size} ids, e.g. {repeated[:3].tolist()}); "
                       "average the responses to repeated images into one row")

    def _check_vertices(self) -> None:
        n_vertices = self.n_vertices
        hemisphere, index, coords = self.hemisphere, self.fsaverage_index, self.sphere_coords
        if not isinstance(hemisphere, np.ndarray) or hemisphere.shape != (n_vertices,):
            self._fail(f"hemisphere must be an array of shape ({n_vertices},), got {_describe(hemisphere)}")
        bad_hemi = ~np.isin(hemisphere, HEMISPHERES)
        if bad_hemi.any():
            self._fail(f"hemisphere values must be 'lh' or 'rh', got {np.unique(hemisphere[bad_hemi])[:5].tolist()}")
        if not isinstance(index, np.ndarray) or index.shape != (n_vertices,) or index.dtype.kind not in "iu":
            self._fail(f"fsaverage_index must be an integer array of shape ({n_vertices},), got {_describe(index)}")
        if index.size and (index.min() < 0 or index.max() >= FSAVERAGE7_VERTICES):
            self._fail(f"fsaverage_index must lie in 0..{FSAVERAGE7_VERTICES - 1}, "
                       f"got {int(index.min())}..{int(index.max())}")
        concatenated = self.concatenated_index
        if np.unique(concatenated).size != n_vertices:
            self._fail("a (hemisphere, fsaverage_index) pair occurs twice; every vertex must be listed once")
        if self.mesh not in MESH_VERTICES:
            self._fail(f"mesh must be one of {sorted(MESH_VERTICES)}, got {self.mesh!r}")
        if index.size and index.max() >= MESH_VERTICES[self.mesh]:
            self._fail(f"mesh {self.mesh} has {MESH_VERTICES[self.mesh]} vertices per hemisphere but "
                       f"fsaverage_index reaches {int(index.max())}; name a larger mesh")
        if not isinstance(coords, np.ndarray) or coords.shape != (n_vertices, 3) or coords.dtype != np.float32:
            self._fail(f"sphere_coords must be float32 of shape ({n_vertices}, 3), got {_describe(coords)}")
        if not np.isfinite(coords).all():
            self._fail("sphere_coords hold NaN/Inf")

    def _check_rois(self) -> None:
        if not isinstance(self.rois, dict):
            self._fail(f"rois must be a dict of name -> bool mask, got {type(self.rois).__name__}")
        for roi, mask in self.rois.items():
            if not isinstance(roi, str) or not roi:
                self._fail(f"ROI names must be non-empty str, got {roi!r}")
            if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.shape != (self.n_vertices,):
                self._fail(f"ROI {roi!r} must be a bool array of shape ({self.n_vertices},), got {_describe(mask)}")

    def _check_splits(self) -> None:
        if not isinstance(self.split_seed, (int, np.integer)) or isinstance(self.split_seed, bool):
            self._fail(f"split_seed must be an int, got {self.split_seed!r}")
        if not isinstance(self.splits, dict):
            self._fail(f"splits must be a dict of split name -> row indices, got {type(self.splits).__name__}")
        unknown = sorted(set(self.splits) - set(SPLIT_NAMES))
        if unknown:
            self._fail(f"unknown split names {unknown}; allowed: {list(SPLIT_NAMES)}")
        owner = np.full(self.n_images, -1, dtype=np.int64)
        for number, (split, rows) in enumerate(self.splits.items()):
            if not isinstance(rows, np.ndarray) or rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
                self._fail(f"split {split!r} must be a 1-D integer array of row indices, got {_describe(rows)}")
            if rows.size and (rows.min() < 0 or rows.max() >= self.n_images):
                self._fail(f"split {split!r} has row indices {int(rows.min())}..{int(rows.max())} "
                           f"outside 0..{self.n_images - 1}")
            if np.unique(rows).size != rows.size:
                self._fail(f"split {split!r} lists a row twice")
            clash = owner[rows] >= 0
            if clash.any():
                other = list(self.splits)[int(owner[rows][clash][0])]
                self._fail(f"splits {other!r} and {split!r} share {int(clash.sum())} rows; they must be disjoint")
            owner[rows] = number

    def _check_noise_ceiling(self) -> None:
        ceiling = self.noise_ceiling
        if ceiling is None:
            return
        if not isinstance(ceiling, np.ndarray) or ceiling.shape != (self.n_vertices,) or ceiling.dtype != np.float32:
            self._fail(f"noise_ceiling must be float32 of shape ({self.n_vertices},), got {_describe(ceiling)}")
        if not np.isfinite(ceiling).all() or ceiling.min() < 0 or ceiling.max() > 1:
            self._fail(f"noise_ceiling must be a finite fraction in 0..1, got range "
                       f"{np.nanmin(ceiling):.3g}..{np.nanmax(ceiling):.3g} (values in percent: divide by 100)")


def _describe(value: object) -> str:
    """Short description of a value for error messages: type, shape and dtype of arrays."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__
