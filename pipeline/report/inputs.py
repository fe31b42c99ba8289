"""What the reporter reads: fit folders, synthetic planted truths, read-out weights and meshes.

Fits live in ``<run root>/fits/<model>/<subject>[-<method>]/``, the subjects of a joint fit in
``<run root>/fits/<model>/<subjA+subjB+...>/<subject>/`` (a folder is a finished fit when it
holds ``fit.json``); planted truths in ``<run root>/synthetic/subjNN/planted_truth.parquet``
(same per-vertex columns as a fit) with ``planted_truth.json`` beside it, read by the
synthetic subject's own loader.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cache.errors import InvalidInputError, MissingInputError
from pipeline.runroot import safe_name, synthetic_root
from pipeline.surfaces import load_mesh, mesh_for_indices
from pipeline.synthetic.layout import TRUTH_TABLE, load_planted_truth
from stages.fit.result import FIT_JSON, FitResult
from stages.fit.weights_file import read_fit_weights
from stages.mesh import CorticalMesh

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ReportInput:
    """One fit or planted truth to report on.

    Attributes:
        fit: the per-vertex table and metadata.
        source: the fit folder or the planted-truth Parquet file.
        slug: folder name of its figures, unique within the report (``<model>/<subject>-<method>``;
            joint fits ``<model>/<subjA+subjB+...>/<subject>-<method>``).
        readout: float array of shape (n_vertices, n_channels), the read-out W, when the fit saved one.
    """

    fit: FitResult
    source: Path
    slug: str
    readout: np.ndarray | None = None


def discover_inputs(run_root: Path, paths: Sequence[str | Path] = ()) -> list[ReportInput]:
    """The inputs named by ``paths`` (fit folders or planted-truth files/folders), else every fit
    under ``run_root/fits/*/*/`` (joint fits: ``run_root/fits/*/*/*/``) and every planted truth under
    ``run_root/synthetic/subj*/``."""
    if paths:
        return [load_input(Path(path)) for path in paths]
    fits = run_root / "fits"
    found = sorted(p.parent for pattern in (f"*/*/{FIT_JSON}", f"*/*/*/{FIT_JSON}") for p in fits.glob(pattern))
    unfinished = sorted(str(folder.relative_to(fits)) for folder in fits.glob("*/*") if folder.is_dir()
                        and not (folder / FIT_JSON).is_file() and not any(folder.glob(f"*/{FIT_JSON}")))
    if unfinished:
        log.warning("%s: %d fit folder(s) without %s are not reported (interrupted or failed fits; rerun `bddn fit` "
                    "to resume them): %s", fits, len(unfinished), FIT_JSON, ", ".join(unfinished[:5]))
    found += sorted(p.parent for p in synthetic_root(run_root).glob(f"*/{TRUTH_TABLE}"))
    return [load_input(path) for path in found]


def load_input(path: Path) -> ReportInput:
    """A fit folder, a synthetic subject folder, or a ``planted_truth.parquet`` file."""
    path = Path(path)
    if path.is_dir() and (path / FIT_JSON).is_file():
        fit = FitResult.load(path)
        return ReportInput(fit, path, _slug(fit), read_readout(path, fit.n_vertices))
    table = path / TRUTH_TABLE if path.is_dir() else path
    if table.name == TRUTH_TABLE and table.is_file():
        fit = load_planted_truth(table.parent)
        return ReportInput(fit, table, _slug(fit))
    raise MissingInputError(f"{path} is neither a finished fit folder (with {FIT_JSON}) nor a synthetic subject "
                            f"(with {TRUTH_TABLE}); run `bddn fit` or `bddn synth` first, or check the path")


def read_readout(folder: Path, n_vertices: int) -> np.ndarray | None:
    """The read-out weights W (n_vertices, n_channels) from the fit's weights file, if it has one with one
    row per vertex (see :mod:`stages.fit.weights_file`)."""
    weights = read_fit_weights(folder)
    readout = None if weights is None else weights.readout
    if readout is None or readout.ndim != 2 or readout.shape[0] != n_vertices:
        return None
    return readout


def load_report_meshes(inputs: Sequence[ReportInput], *, subjects_dir: Path | None = None
                       ) -> tuple[CorticalMesh, CorticalMesh]:
    """The ``flat`` and ``inflated`` meshes of the smallest fsaverage order holding every input's
    vertices; when that order is not installed, fsaverage5 (the fits' fsaverage5 subset is shown)."""
    if not inputs:
        raise InvalidInputError("nothing to draw: no fit or planted truth given")
    largest = max(int(np.max(item.fit.vertices["fsaverage_index"])) for item in inputs)
    needed = mesh_for_indices(np.array([largest]))
    try:
        return load_mesh(needed, "flat", subjects_dir=subjects_dir), load_mesh(needed, "inflated",
                                                                              subjects_dir=subjects_dir)
    except MissingInputError as error:
        warnings.warn(f"{error}; drawing the fsaverage5 subset of the vertices instead", stacklevel=2)
        return load_mesh("fsaverage5", "flat"), load_mesh("fsaverage5", "inflated")


def _slug(fit: FitResult) -> str:
    subjects = joint_subjects(fit)
    group = "+".join(safe_name(name) for name in subjects) + "/" if subjects else ""
    return f"{safe_name(fit.model)}/{group}{safe_name(fit.subject)}-{safe_name(fit.method)}"


def joint_subjects(fit: FitResult) -> list[str]:
    """The subjects fitted together with ``fit`` (itself included), as its provenance records them; [] for a
    fit of one subject."""
    joint = fit.provenance.get("joint")
    return list(joint.get("subjects", [])) if isinstance(joint, dict) else []
