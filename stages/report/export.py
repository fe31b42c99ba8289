"""Per-vertex maps as GIfTI functional files, one per map and hemisphere.

Each file holds one float32 data array over the *full* vertex count of its fsaverage
hemisphere (10,242 for fsaverage5 ... 163,842 for fsaverage), NaN where the fit has no
vertex, with the ``AnatomicalStructurePrimary`` metadata that Connectome Workbench uses to
pair it with a surface (``CortexLeft`` / ``CortexRight``). nibabel writes it; nilearn,
FreeSurfer (``mris_convert``, freeview) and Workbench read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np

from cache.errors import InvalidInputError
from stages.fit.result import FitResult
from stages.mesh import HEMISPHERES

STRUCTURES = {"lh": "CortexLeft", "rh": "CortexRight"}


def map_to_gifti(values: np.ndarray, *, hemisphere: str, name: str, metadata: Mapping[str, str] | None = None
                 ) -> nib.gifti.GiftiImage:
    """One hemisphere's map as a GIfTI image.

    Args:
        values: float array of shape (n_mesh_vertices,), NaN where unfitted.
        hemisphere: ``"lh"`` or ``"rh"``.
        name: the map's name (stored as the data array's ``Name``).
        metadata: extra key -> value strings for the file's metadata (model, subject, method).
    """
    if hemisphere not in STRUCTURES:
        raise InvalidInputError(f"hemisphere must be 'lh' or 'rh', got {hemisphere!r}")
    meta = {"AnatomicalStructurePrimary": STRUCTURES[hemisphere], **(metadata or {})}
    array = nib.gifti.GiftiDataArray(np.asarray(values, dtype=np.float32), intent="NIFTI_INTENT_ESTIMATE",
                                     datatype="NIFTI_TYPE_FLOAT32", meta={"Name": name})
    return nib.gifti.GiftiImage(darrays=[array], meta=nib.gifti.GiftiMetaData(meta))


def full_hemisphere_maps(fit: FitResult, values: np.ndarray, n_mesh_vertices: int) -> dict[str, np.ndarray]:
    """A fit's per-vertex values on the full hemisphere vertex count (NaN elsewhere).

    Vertices with ``fsaverage_index >= n_mesh_vertices`` are dropped (nesting: the export
    is the fit restricted to the mesh order asked for).

    Returns:
        ``{"lh": float32 array (n_mesh_vertices,), "rh": ...}``.
    """
    hemisphere = np.asarray(fit.vertices["hemisphere"]).astype(str)
    index = np.asarray(fit.vertices["fsaverage_index"], dtype=np.int64)
    out = {}
    for name in HEMISPHERES:
        full = np.full(n_mesh_vertices, np.nan, dtype=np.float32)
        keep = (hemisphere == name) & (index < n_mesh_vertices)
        full[index[keep]] = np.asarray(values, dtype=np.float32)[keep]
        out[name] = full
    return out


def write_gifti_maps(fit: FitResult, maps: Mapping[str, np.ndarray], directory: Path, *,
                     n_mesh_vertices: int) -> list[Path]:
    """Write ``<directory>/<map>.<hemi>.func.gii`` for every map and hemisphere.

    Args:
        fit: the fit the maps belong to (vertex placement and metadata).
        maps: map name -> float array of shape (n_vertices,) over the fit's vertices.
        directory: output folder (created).
        n_mesh_vertices: vertices per hemisphere of the target fsaverage order.

    Returns:
        The written paths. Each file is written under a temporary name and renamed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = {"model": fit.model, "subject": fit.subject, "method": fit.method}
    written = []
    for map_name, values in maps.items():
        if len(values) != fit.n_vertices:
            raise InvalidInputError(f"map {map_name!r} has {len(values)} values; the fit has {fit.n_vertices} vertices")
        for hemisphere, full in full_hemisphere_maps(fit, values, n_mesh_vertices).items():
            target = directory / f"{map_name}.{hemisphere}.func.gii"
            partial = directory / f".{map_name}.{hemisphere}.partial.func.gii"
            nib.save(map_to_gifti(full, hemisphere=hemisphere, name=map_name, metadata=metadata), partial)
            partial.replace(target)
            written.append(target)
    return written
