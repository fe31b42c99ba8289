"""fsaverage surfaces: bundled fsaverage5, FreeSurfer folders, nesting, rh shift, neighbours."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cache.errors import InvalidInputError, MissingInputError
from pipeline.surfaces import (
    KINDS, load_mesh, mesh_for_indices, mesh_neighbours, sphere_coordinates, surface_coordinates,
)


@pytest.mark.parametrize("kind", KINDS)
def test_bundled_fsaverage5_has_10242_vertices_per_hemisphere(kind: str) -> None:
    mesh = load_mesh("fsaverage5", kind)
    for side in ("lh", "rh"):
        half = mesh.hemisphere(side)
        assert half.coords.shape == (10242, 3) and half.coords.dtype == np.float32
        assert half.sulcal_depth is not None and half.sulcal_depth.shape == (10242,)
        assert half.faces.min() >= 0 and half.faces.max() < 10242
        if kind == "flat":
            assert np.all(half.coords[:, 2] == 0)
            assert 9000 < np.unique(half.faces).size < 10242  # the medial wall is cut away
        else:
            assert half.faces.shape == (20480, 3)  # closed icosahedral surface: 2 * 10242 - 4 faces


def test_sphere_is_the_radius_100_icosahedron_shared_by_both_hemispheres() -> None:
    mesh = load_mesh("fsaverage5", "sphere")
    radius = np.linalg.norm(mesh.lh.coords, axis=1)
    assert np.allclose(radius, 100.0, atol=0.05)
    assert np.array_equal(mesh.lh.coords, mesh.rh.coords)
    # the first 12 vertices are the icosahedron's: every one has 5 others at the edge length 100 * 1.05146
    base = mesh.lh.coords[:12].astype(np.float64)
    distances = np.linalg.norm(base[:, None] - base[None], axis=2)
    edge = 100.0 * 4.0 / np.sqrt(10.0 + 2.0 * np.sqrt(5.0))
    assert np.all((np.abs(distances - edge) < 0.05).sum(axis=1) == 5)


def test_right_hemisphere_is_shifted_by_the_method_rule() -> None:
    rng = np.random.default_rng(0)
    index = np.concatenate([rng.choice(10242, 300, replace=False), rng.choice(10242, 200, replace=False)])
    hemisphere = np.array(["lh"] * 300 + ["rh"] * 200)
    coords = sphere_coordinates(hemisphere, index)
    raw = load_mesh("fsaverage5", "sphere").lh.coords[index]
    lh_x = raw[:300, 0]
    expected_rh_min = lh_x.min() + 1.5 * (lh_x.max() - lh_x.min())
    assert np.allclose(coords[:300], raw[:300])
    assert coords[300:, 0].min() == pytest.approx(expected_rh_min, abs=1e-3)
    assert np.allclose(coords[300:, 0] - raw[300:, 0], expected_rh_min - raw[300:, 0].min(), atol=1e-3)
    assert np.allclose(coords[300:, 1:], raw[300:, 1:])
    assert coords[300:, 0].min() > coords[:300, 0].max()  # the hemispheres no longer overlap


def test_one_hemisphere_alone_is_not_shifted() -> None:
    index = np.arange(50)
    coords = sphere_coordinates(np.full(50, "rh"), index)
    assert np.allclose(coords, load_mesh("fsaverage5", "sphere").rh.coords[:50])


def test_mesh_for_indices_picks_the_smallest_order() -> None:
    assert mesh_for_indices(np.array([0, 10241])) == "fsaverage5"
    assert mesh_for_indices(np.array([10242])) == "fsaverage6"
    assert mesh_for_indices(np.array([40961])) == "fsaverage6"
    assert mesh_for_indices(np.array([40962, 5])) == "fsaverage"
    with pytest.raises(InvalidInputError, match="out of range"):
        mesh_for_indices(np.array([163842]))
    with pytest.raises(InvalidInputError, match="negative"):
        mesh_for_indices(np.array([-1]))
    with pytest.raises(InvalidInputError, match="integer"):
        mesh_for_indices(np.array([1.5]))


def test_fsaverage7_indices_in_the_fsaverage5_prefix_work_offline() -> None:
    hemisphere, index = np.array(["lh", "rh"]), np.array([17, 10241])
    bundled = load_mesh("fsaverage5", "inflated")
    coords = surface_coordinates("inflated", hemisphere, index)
    assert np.array_equal(coords[0], bundled.lh.coords[17]) and np.array_equal(coords[1], bundled.rh.coords[10241])


def test_indices_beyond_fsaverage5_without_a_larger_mesh_say_what_to_get() -> None:
    with pytest.raises(MissingInputError, match="SUBJECTS_DIR") as caught:
        sphere_coordinates(np.array(["lh", "lh"]), np.array([3, 10242]))
    assert "fsaverage6" in str(caught.value)
    with pytest.raises(MissingInputError, match="fsaverage6"):
        load_mesh("fsaverage6", "sphere")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown surface kind"):
        load_mesh("fsaverage5", "smoothwm")
    with pytest.raises(InvalidInputError, match="unknown mesh"):
        load_mesh("fsaverage4", "sphere")
    with pytest.raises(InvalidInputError, match="'lh' or 'rh'"):
        sphere_coordinates(np.array(["left"]), np.array([0]))
    with pytest.raises(InvalidInputError, match="shape"):
        sphere_coordinates(np.array(["lh", "lh"]), np.array([0]))


def _plain_edges(faces: np.ndarray) -> set[tuple[int, int]]:
    edges = set()
    for a, b, c in faces.tolist():
        for i, j in ((a, b), (b, c), (c, a)):
            edges.add((i, j))
            edges.add((j, i))
    return edges


def test_neighbours_match_the_faces_and_are_symmetric() -> None:
    rng = np.random.default_rng(1)
    lh = np.sort(rng.choice(10242, 3000, replace=False))
    rh = np.sort(rng.choice(10242, 2000, replace=False))
    hemisphere = np.array(["lh"] * lh.size + ["rh"] * rh.size)
    index = np.concatenate([lh, rh])
    pairs = mesh_neighbours(hemisphere, index)
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2
    as_set = set(map(tuple, pairs.tolist()))
    assert as_set == {(j, i) for i, j in as_set}
    mesh = load_mesh("fsaverage5", "sphere")
    expected = set()
    for side, vertices, offset in (("lh", lh, 0), ("rh", rh, lh.size)):
        position = {int(v): offset + k for k, v in enumerate(vertices)}
        for i, j in _plain_edges(mesh.hemisphere(side).faces):
            if i in position and j in position:
                expected.add((position[i], position[j]))
    assert as_set == expected
    full = mesh_neighbours(np.full(10242, "lh"), np.arange(10242))
    degree = np.bincount(full[:, 0])
    assert set(np.unique(degree)) == {5, 6} and (degree == 5).sum() == 12


def _subdivided(coords: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One icosahedral subdivision: old vertices first, then edge midpoints pushed onto the sphere."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    middle = coords[unique].mean(axis=1)
    middle *= 100.0 / np.linalg.norm(middle, axis=1, keepdims=True)
    mid = coords.shape[0] + inverse.reshape(3, -1).T  # columns: ab, bc, ca
    a, b, c = faces.T
    ab, bc, ca = mid.T
    new_faces = np.concatenate([np.stack(t, axis=1) for t in ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))])
    return np.concatenate([coords, middle]).astype(np.float32), new_faces


@pytest.fixture
def fsaverage6_dir(tmp_path: Path) -> Path:
    sphere = load_mesh("fsaverage5", "sphere")
    surf = tmp_path / "subjects" / "fsaverage6" / "surf"
    surf.mkdir(parents=True)
    coords, faces = _subdivided(sphere.lh.coords.astype(np.float64), sphere.lh.faces)
    for side in ("lh", "rh"):
        nib.freesurfer.write_geometry(str(surf / f"{side}.sphere.reg"), coords, faces)
    return tmp_path / "subjects"


def test_a_freesurfer_folder_serves_larger_meshes(fsaverage6_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBJECTS_DIR", str(fsaverage6_dir))
    mesh = load_mesh("fsaverage6", "sphere")
    assert mesh.lh.n_vertices == 40962 and mesh.lh.faces.shape == (81920, 3)
    index = np.array([0, 5000, 10242, 40961])
    coords = sphere_coordinates(np.full(4, "lh"), index)
    assert np.allclose(coords[:2], load_mesh("fsaverage5", "sphere").lh.coords[[0, 5000]], atol=1e-3)
    assert np.allclose(np.linalg.norm(coords, axis=1), 100.0, atol=1e-2)
    pairs = mesh_neighbours(np.full(40962, "lh"), np.arange(40962))
    assert set(np.unique(np.bincount(pairs[:, 0]))) == {5, 6}
    with pytest.raises(MissingInputError, match="inflated"):
        load_mesh("fsaverage6", "inflated")


def test_a_surface_file_of_the_wrong_order_is_refused(tmp_path: Path) -> None:
    sphere = load_mesh("fsaverage5", "sphere")
    surf = tmp_path / "fsaverage6" / "surf"
    surf.mkdir(parents=True)
    for side in ("lh", "rh"):
        nib.freesurfer.write_geometry(str(surf / f"{side}.sphere"), sphere.lh.coords.astype(np.float64),
                                      sphere.lh.faces)
    with pytest.raises(InvalidInputError, match="10242 vertices"):
        load_mesh("fsaverage6", "sphere", subjects_dir=tmp_path)


def test_broken_surface_files_are_named(tmp_path: Path) -> None:
    surf = tmp_path / "fsaverage6" / "surf"
    surf.mkdir(parents=True)
    for side in ("lh", "rh"):
        (surf / f"{side}.sphere.reg").write_bytes(b"not a surface")
    with pytest.raises(InvalidInputError, match=r"cannot read surface .*lh\.sphere\.reg"):
        load_mesh("fsaverage6", "sphere", subjects_dir=tmp_path)


def test_a_flat_gifti_in_the_freesurfer_folder_is_used(fsaverage6_dir: Path) -> None:
    sphere = load_mesh("fsaverage6", "sphere", subjects_dir=fsaverage6_dir)
    surf = fsaverage6_dir / "fsaverage6" / "surf"
    for side in ("lh", "rh"):
        coords = sphere.lh.coords.copy()
        coords[:, 2] = 5.0
        image = nib.gifti.GiftiImage(darrays=[
            nib.gifti.GiftiDataArray(coords, intent="NIFTI_INTENT_POINTSET", datatype="NIFTI_TYPE_FLOAT32"),
            nib.gifti.GiftiDataArray(sphere.lh.faces[:1000].astype(np.int32), intent="NIFTI_INTENT_TRIANGLE",
                                     datatype="NIFTI_TYPE_INT32")])
        nib.save(image, str(surf / f"{side}.flat.gii"))
    flat = load_mesh("fsaverage6", "flat", subjects_dir=fsaverage6_dir)
    assert flat.rh.coords.shape == (40962, 3) and np.all(flat.rh.coords[:, 2] == 0)
    assert flat.rh.faces.shape == (1000, 3)
