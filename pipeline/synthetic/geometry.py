"""Where the synthetic subject's vertices are: a posterior region of fsaverage5 and its geometric ROIs.

Per hemisphere, the region is the ``vertices_per_hemisphere`` cortical vertices nearest
the occipital pole, measured as great-circle distance on the registration sphere
(radius 100, so distances are in sphere millimetres). The sphere is used rather than
the flat map because it has no cuts (the flat map splits the occipital pole along the
calcarine cut) and it is the space the FactorTopy selectors see. Medial-wall vertices
(those the flat map cuts away) are excluded.

* Pole: the most posterior vertex of the white surface (minimum y), moved by a small
  random rotation per subject.
* Frame: around the pole, ``angle`` is the direction on the sphere's tangent plane,
  0 = lateral, +pi/2 = dorsal, -pi/2 = ventral (lateral is -x for lh, +x for rh, so the
  hemispheres are mirror images); ``distance`` is the great-circle distance to the pole.
* ROIs: V1, V2, V3, V4 are rings of increasing distance holding ``band_fractions`` of the
  region's vertices each; V1-V3 split into ventral (``v``) and dorsal (``d``) halves, V4 is
  ``hV4`` as in the NSD labels. Beyond V4 lies higher cortex with five angular patches
  named like category areas (OFA, FFA-1, EBA, PPA, OPA), separated by unlabelled cortex.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.surfaces import load_mesh
from pipeline.synthetic.config import SyntheticConfig
from stages.mesh import HEMISPHERES

#: Coarse area names by band (0..3) and for higher cortex.
BAND_NAMES = ("V1", "V2", "V3", "V4")
#: Higher patches: (area, ROI class, label name, centre angle in degrees, half width in degrees).
PATCHES = (
    ("EBA", "floc-bodies", "EBA", 30.0, 22.0),
    ("OFA", "floc-faces", "OFA", -25.0, 20.0),
    ("FFA", "floc-faces", "FFA-1", -85.0, 22.0),
    ("PPA", "floc-places", "PPA", -145.0, 22.0),
    ("OPA", "floc-places", "OPA", 95.0, 22.0),
)
#: Label tables written as ``mapping_<class>.npy`` (the NSD class tables; 0 = outside).
ROI_NAMES: dict[str, dict[int, str]] = {
    "prf-visualrois": {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"},
    "floc-bodies": {0: "Unknown", 1: "EBA", 2: "FBA-1", 3: "FBA-2", 4: "mTL-bodies"},
    "floc-faces": {0: "Unknown", 1: "OFA", 2: "FFA-1", 3: "FFA-2", 4: "mTL-faces", 5: "aTL-faces"},
    "floc-places": {0: "Unknown", 1: "OPA", 2: "PPA", 3: "RSC"},
}
#: Share of the gap between V4 and the region's edge left unlabelled before the patches start.
PATCH_GAP = 0.1
_POLE_JITTER_DEG = 1.5
_BAND_JITTER = 0.08
_PATCH_JITTER_DEG = 6.0
_SPHERE_RADIUS = 100.0


@dataclass(frozen=True)
class RegionGeometry:
    """The synthetic subject's vertices (lh first, then rh; ascending fsaverage index within each).

    Attributes:
        hemisphere: array of shape (n_vertices,) of ``"lh"`` / ``"rh"``.
        fsaverage_index: int64 array of shape (n_vertices,).
        sphere: float64 array of shape (n_vertices, 3): registration-sphere coordinates, unshifted.
        distance: float64 array of shape (n_vertices,): great-circle distance to the pole (mm).
        angle: float64 array of shape (n_vertices,): direction around the pole (radians; 0 lateral, +pi/2 dorsal).
        band: int array of shape (n_vertices,): 0..3 for V1..V4, 4 for higher cortex.
        edges: float64 array of shape (n_vertices, 6): the vertex's hemisphere's ring edges
            (0, r1, r2, r3, r4, region radius).
        area: array of shape (n_vertices,) of str: V1..V4, a patch's area name, or ``""``.
        record: the drawn geometry (pole, edges, patch angles) for the planted-truth JSON.
    """

    hemisphere: np.ndarray
    fsaverage_index: np.ndarray
    sphere: np.ndarray
    distance: np.ndarray
    angle: np.ndarray
    band: np.ndarray
    edges: np.ndarray
    area: np.ndarray
    record: dict[str, Any]

    @property
    def n_vertices(self) -> int:
        return int(self.fsaverage_index.size)


def build_region(cfg: SyntheticConfig, rng: np.random.Generator) -> RegionGeometry:
    """Draw one subject's region and ROIs on fsaverage5 (``rng`` supplies the between-subject jitter)."""
    sphere, white, flat = (load_mesh("fsaverage5", kind) for kind in ("sphere", "white", "flat"))
    parts, record = [], {"surface": "fsaverage5 registration sphere (radius 100)", "hemispheres": {}}
    for side in HEMISPHERES:
        coords = sphere.hemisphere(side).coords.astype(np.float64)
        cortex = np.zeros(coords.shape[0], dtype=bool)
        cortex[np.unique(flat.hemisphere(side).faces)] = True
        pole_vertex = int(np.argmin(white.hemisphere(side).coords[:, 1]))
        pole = _jittered(coords[pole_vertex] / _SPHERE_RADIUS, rng, np.radians(_POLE_JITTER_DEG) * cfg.jitter)
        lateral, dorsal = _tangent_frame(pole, lateral_sign=-1.0 if side == "lh" else 1.0)
        unit = coords / np.linalg.norm(coords, axis=1, keepdims=True)
        distance = _SPHERE_RADIUS * np.arccos(np.clip(unit @ pole, -1.0, 1.0))
        angle = np.arctan2(unit @ dorsal, unit @ lateral)
        candidates = np.flatnonzero(cortex)
        chosen = np.sort(candidates[np.argsort(distance[candidates], kind="stable")[:cfg.vertices_per_hemisphere]])
        fractions = np.asarray(cfg.band_fractions) * np.exp(rng.normal(0.0, _BAND_JITTER * cfg.jitter, 4))
        ranked = np.sort(distance[chosen])
        cuts = np.minimum(np.cumsum(fractions), 0.95) * (ranked.size - 1)
        edges = np.concatenate([[0.0], np.interp(cuts, np.arange(ranked.size), ranked), [ranked[-1]]])
        patch_centres = [centre + rng.normal(0.0, _PATCH_JITTER_DEG * cfg.jitter) for *_, centre, _ in PATCHES]
        band = np.searchsorted(edges[1:5], distance[chosen], side="right")
        area = _areas(band, distance[chosen], angle[chosen], edges, patch_centres)
        parts.append(dict(hemisphere=np.full(chosen.size, side), fsaverage_index=chosen.astype(np.int64),
                          sphere=coords[chosen], distance=distance[chosen], angle=angle[chosen], band=band,
                          edges=np.tile(edges, (chosen.size, 1)), area=area))
        record["hemispheres"][side] = {
            "pole_vertex": pole_vertex, "pole_direction": pole.tolist(), "lateral_axis": lateral.tolist(),
            "dorsal_axis": dorsal.tolist(), "ring_edges_mm": edges.tolist(),
            "band_fractions": fractions.tolist(),
            "patch_centres_deg": {name: float(c) for (name, *_), c in zip(PATCHES, patch_centres)},
        }
    record["patches"] = [{"area": a, "class": c, "label": n, "half_width_deg": w} for a, c, n, _, w in PATCHES]
    merged = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return RegionGeometry(**merged, record=record)


def roi_labels(geometry: RegionGeometry) -> dict[str, np.ndarray]:
    """ROI class -> int label per vertex (0 = outside), coded as in :data:`ROI_NAMES`.

    Returns:
        class -> int32 array of shape (n_vertices,).
    """
    ventral = np.sin(geometry.angle) < 0
    visual = np.zeros(geometry.n_vertices, dtype=np.int32)
    for band in range(3):
        inside = geometry.band == band
        visual[inside & ventral] = 2 * band + 1
        visual[inside & ~ventral] = 2 * band + 2
    visual[geometry.band == 3] = 7
    labels = {"prf-visualrois": visual}
    for area, roi_class, label_name, *_ in PATCHES:
        labels.setdefault(roi_class, np.zeros(geometry.n_vertices, dtype=np.int32))
        code = next(code for code, name in ROI_NAMES[roi_class].items() if name == label_name)
        labels[roi_class][geometry.area == area] = code
    return labels


def _areas(band: np.ndarray, distance: np.ndarray, angle: np.ndarray, edges: np.ndarray,
           patch_centres: list[float]) -> np.ndarray:
    area = np.array([BAND_NAMES[b] if b < 4 else "" for b in band], dtype=object)
    start = edges[4] + PATCH_GAP * (edges[5] - edges[4])
    for (name, _, _, _, half_width), centre in zip(PATCHES, patch_centres):
        offset = np.degrees(np.angle(np.exp(1j * (angle - np.radians(centre)))))
        area[(band == 4) & (distance >= start) & (np.abs(offset) <= half_width)] = name
    return area.astype(str)


def _jittered(direction: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """``direction`` rotated by a random tangent offset of typical size ``scale`` radians."""
    step = rng.normal(0.0, scale, 3)
    step -= (step @ direction) * direction
    moved = direction + step
    return moved / np.linalg.norm(moved)


def _tangent_frame(pole: np.ndarray, *, lateral_sign: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit lateral and dorsal axes on the tangent plane at ``pole`` (dorsal = projected +z)."""
    dorsal = np.array([0.0, 0.0, 1.0]) - pole[2] * pole
    dorsal /= np.linalg.norm(dorsal)
    lateral = np.cross(dorsal, pole)
    if lateral[0] * lateral_sign < 0:
        lateral = -lateral
    return lateral, dorsal
