"""The subject as data: what stage two needs to fit one brain, wherever it came from.

Readers in ``pipeline/`` (Algonauts 2023, NSD, generic, synthetic) build a
:class:`Subject`; stages consume it without knowing the file layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Vertices per hemisphere of fsaverage (icosahedral order 7); right-hemisphere
#: vertices are offset by this in the concatenated index space.
FSAVERAGE7_VERTICES = 163_842


@dataclass(frozen=True)
class Subject:
    """One subject's responses and cortical geometry.

    Attributes:
        name: subject label, e.g. ``"subj01"``.
        stimulus_ids: array of shape (n_images,) of str: the feature store's image ids,
            in response row order.
        responses: float32 array of shape (n_images, n_vertices).
        hemisphere: array of shape (n_vertices,) of str, ``"lh"`` or ``"rh"``.
        fsaverage_index: int64 array of shape (n_vertices,): vertex index within its
            hemisphere on fsaverage (order 7 numbering; lower orders nest as a prefix).
        sphere_coords: float32 array of shape (n_vertices, 3): registration-sphere
            coordinates, right hemisphere shifted along x as in the method (the
            selectors' input).
        rois: ROI name -> bool array of shape (n_vertices,).
        splits: ``"train"``, ``"val"``, ``"test"`` -> int64 row indices into ``responses``.
        split_seed: the seed that drew the train/val split (recorded in every fit).
        noise_ceiling: optional float32 array of shape (n_vertices,), fraction of
            variance (0..1) explainable for the averaged responses.
        mesh: the smallest fsaverage mesh holding every vertex (``"fsaverage5"``,
            ``"fsaverage6"`` or ``"fsaverage"``).
        source: where the data came from (reader name and root), for provenance.
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
