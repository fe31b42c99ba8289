"""Cortical surface meshes as data: what stage three draws on and stage two takes neighbours from.

``pipeline.surfaces`` builds these from FreeSurfer or nilearn files; stages never
read mesh files themselves. The mesh constants (hemisphere names, vertices per fsaverage
order) are defined here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The two hemispheres, left first: the order of every concatenation over hemispheres.
HEMISPHERES = ("lh", "rh")

#: Vertices per hemisphere of fsaverage (icosahedral order 7); right-hemisphere
#: vertices are offset by this in the concatenated index space.
FSAVERAGE7_VERTICES = 163_842

#: Vertices per hemisphere of each supported fsaverage order (``"fsaverage"`` is order 7);
#: lower orders are a prefix of higher ones.
MESH_VERTICES = {"fsaverage5": 10_242, "fsaverage6": 40_962, "fsaverage": FSAVERAGE7_VERTICES}


@dataclass(frozen=True)
class HemisphereMesh:
    """One hemisphere's surface.

    Attributes:
        hemisphere: ``"lh"`` or ``"rh"``.
        kind: ``"sphere"``, ``"flat"``, ``"inflated"``, ``"pial"`` or ``"white"``.
        coords: float32 array of shape (n_mesh_vertices, 3) (``flat`` has z = 0).
        faces: int64 array of shape (n_faces, 3), indices into ``coords``; a ``flat``
            mesh holds only the faces that survive the cut.
        sulcal_depth: optional float32 array of shape (n_mesh_vertices,) for the grey underlay.
    """

    hemisphere: str
    kind: str
    coords: np.ndarray
    faces: np.ndarray
    sulcal_depth: np.ndarray | None = None

    @property
    def n_vertices(self) -> int:
        return int(self.coords.shape[0])


@dataclass(frozen=True)
class CorticalMesh:
    """Both hemispheres of one fsaverage order and kind (``mesh`` names the order, e.g. ``"fsaverage5"``)."""

    mesh: str
    lh: HemisphereMesh
    rh: HemisphereMesh

    def hemisphere(self, name: str) -> HemisphereMesh:
        """The ``"lh"`` or ``"rh"`` mesh."""
        return {"lh": self.lh, "rh": self.rh}[name]
