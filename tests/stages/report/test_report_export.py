"""GIfTI exports: full fsaverage vertex count, NaN outside the fit, readable by nibabel and nilearn."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nilearn.surface import load_surf_data

from cache.errors import InvalidInputError
from report_helpers import planted_fit
from stages.report.export import map_to_gifti, write_gifti_maps
from stages.report.maps import scalar_exports


def test_gifti_round_trip_with_nan_outside(tmp_path: Path) -> None:
    fit = planted_fit()
    maps = scalar_exports(fit)
    paths = write_gifti_maps(fit, maps, tmp_path, n_mesh_vertices=10242)
    assert len(paths) == 2 * len(maps)
    assert not list(tmp_path.glob(".*partial*"))
    hemisphere = fit.vertices["hemisphere"]
    index = fit.vertices["fsaverage_index"]
    for hemi, structure in (("lh", "CortexLeft"), ("rh", "CortexRight")):
        image = nib.load(tmp_path / f"layer_mean.{hemi}.func.gii")
        assert image.meta["AnatomicalStructurePrimary"] == structure
        assert image.meta["model"] == fit.model
        data = image.darrays[0].data
        assert data.shape == (10242,) and data.dtype == np.float32
        inside = np.zeros(10242, dtype=bool)
        inside[index[hemisphere == hemi]] = True
        np.testing.assert_allclose(data[index[hemisphere == hemi]], fit.vertices["layer_mean"][hemisphere == hemi])
        assert np.isnan(data[~inside]).all() and np.isfinite(data[inside]).all()
        via_nilearn = load_surf_data(str(tmp_path / f"layer_mean.{hemi}.func.gii"))
        np.testing.assert_array_equal(np.isnan(via_nilearn), ~inside)


def test_vertices_beyond_the_requested_order_are_dropped(tmp_path: Path) -> None:
    fit = planted_fit()
    fit.vertices["fsaverage_index"] = fit.vertices["fsaverage_index"] + 40962  # only on fsaverage (order 7)
    write_gifti_maps(fit, {"scale": fit.vertices["scale"]}, tmp_path, n_mesh_vertices=10242)
    assert np.isnan(nib.load(tmp_path / "scale.lh.func.gii").darrays[0].data).all()
    write_gifti_maps(fit, {"scale": fit.vertices["scale"]}, tmp_path, n_mesh_vertices=163842)
    assert np.isfinite(nib.load(tmp_path / "scale.lh.func.gii").darrays[0].data).sum() == (
        fit.vertices["hemisphere"] == "lh").sum()


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    fit = planted_fit()
    with pytest.raises(InvalidInputError, match="has 3 values"):
        write_gifti_maps(fit, {"x": np.ones(3)}, tmp_path, n_mesh_vertices=10242)
    with pytest.raises(InvalidInputError, match="hemisphere"):
        map_to_gifti(np.ones(3), hemisphere="left", name="x")
