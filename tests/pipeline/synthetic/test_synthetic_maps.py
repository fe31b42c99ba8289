"""The synthetic subject's region, ROIs and planted maps (no feature store needed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from cache.errors import ConfigError
from pipeline.config import build_config
from pipeline.surfaces import load_mesh, mesh_neighbours
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.geometry import PATCHES, ROI_NAMES, build_region, roi_labels
from pipeline.synthetic.planting import plant_maps

N_LAYERS = 19
AREAS = ("V1", "V2", "V3", "V4")
HIGHER = tuple(patch[0] for patch in PATCHES)


@pytest.fixture(scope="module")
def planted():
    cfg = SyntheticConfig(vertices_per_hemisphere=800)
    geometry = build_region(cfg, np.random.default_rng(3))
    return cfg, geometry, plant_maps(geometry, n_layers=N_LAYERS, cfg=cfg, rng=np.random.default_rng(4))


def _roi_mean(values: np.ndarray, area: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    return np.array([values[area == name].mean() for name in names])


def test_region_is_cortex_near_the_occipital_pole(planted) -> None:
    cfg, geometry, _ = planted
    flat = load_mesh("fsaverage5", "flat")
    for side in ("lh", "rh"):
        index = geometry.fsaverage_index[geometry.hemisphere == side]
        assert index.size == cfg.vertices_per_hemisphere
        assert np.all(np.diff(index) > 0)
        assert np.isin(index, np.unique(flat.hemisphere(side).faces)).all()  # no medial-wall vertex
    assert list(geometry.hemisphere[:3]) == ["lh"] * 3 and geometry.hemisphere[-1] == "rh"


def test_rois_are_rings_ordered_outward_from_the_pole_on_the_cortex(planted) -> None:
    _, geometry, _ = planted
    pial = load_mesh("fsaverage5", "pial")
    for side in ("lh", "rh"):
        rows = geometry.hemisphere == side
        coords = pial.hemisphere(side).coords.astype(np.float64)
        pole = coords[np.argmin(coords[:, 1])]  # most posterior point of the pial surface, independent of the sphere
        distance = np.linalg.norm(coords[geometry.fsaverage_index[rows]] - pole, axis=1)
        area = geometry.area[rows]
        medians = [np.median(distance[area == name]) for name in AREAS] + [np.median(distance[geometry.band[rows] == 4])]
        assert np.all(np.diff(medians) > 0), medians
        sphere_distance = geometry.distance[rows]
        for inner, outer in zip(AREAS, AREAS[1:] + HIGHER):
            assert sphere_distance[area == inner].max() <= sphere_distance[np.isin(area, [outer])].min()
        for name in AREAS + HIGHER:
            assert (area == name).sum() >= 25, name


def test_roi_labels_use_the_algonauts_names(planted) -> None:
    _, geometry, _ = planted
    labels = roi_labels(geometry)
    assert set(labels) == {"prf-visualrois", "floc-faces", "floc-bodies", "floc-places"}
    visual = labels["prf-visualrois"]
    v1 = geometry.area == "V1"
    assert set(np.unique(visual[v1])) == {1, 2}
    assert np.all(np.sin(geometry.angle[visual == 1]) < 0)  # V1v is ventral
    assert np.all(visual[geometry.area == "V4"] == 7) and ROI_NAMES["prf-visualrois"][7] == "hV4"
    assert np.array_equal(labels["floc-faces"] == 2, geometry.area == "FFA")
    assert np.all(visual[geometry.band == 4] == 0)


def test_planted_layer_rises_along_the_hierarchy(planted) -> None:
    _, geometry, maps = planted
    assert np.allclose(maps.layer_weights.sum(axis=1), 1.0, atol=1e-5)
    expected = maps.layer_weights @ np.arange(N_LAYERS)
    early = _roi_mean(expected, geometry.area, AREAS)
    higher = _roi_mean(expected, geometry.area, HIGHER)
    assert np.all(np.diff(early) > 1.5), early
    assert higher.min() > early[-1] + 1.0
    assert early[0] < 0.25 * (N_LAYERS - 1) and higher.max() > 0.75 * (N_LAYERS - 1)
    # a soft mixture of neighbouring layers: the preferred layer and its neighbours carry most weight
    top = np.sort(maps.layer_weights, axis=1)[:, ::-1]
    assert np.all(top[:, 0] < 0.6) and np.all(top[:, :3].sum(axis=1) > 0.75)


def test_receptive_field_size_and_globality_rise_along_the_hierarchy(planted) -> None:
    _, geometry, maps = planted
    for values in (maps.rf_size, maps.scale):
        means = _roi_mean(values, geometry.area, AREAS + ("OFA",))
        assert np.all(np.diff(means) > 0), means
    assert np.all((maps.scale >= 0) & (maps.scale <= 1))


def test_retinotopy_is_mirrored_between_hemispheres(planted) -> None:
    cfg, geometry, maps = planted
    x, y = maps.space.T
    lh, rh = geometry.hemisphere == "lh", geometry.hemisphere == "rh"
    assert np.all(x[lh] >= 0) and np.all(x[rh] <= 0)  # each hemisphere sees the opposite visual field
    assert np.all(np.abs(maps.space) <= 1)
    low, high = cfg.eccentricity_range
    assert np.allclose(np.hypot(x, y), maps.eccentricity, atol=1e-5)
    assert low - 1e-6 <= maps.eccentricity.min() and maps.eccentricity.max() <= high + 1e-6
    white = load_mesh("fsaverage5", "white")
    for side, rows in (("lh", lh), ("rh", rh)):
        z = white.hemisphere(side).coords[geometry.fsaverage_index[rows], 2]
        early = geometry.band[rows] < 3
        assert spearmanr(z[early], y[rows][early])[0] > 0.5  # dorsal cortex -> lower field (y > 0 is down)
        v1 = geometry.area[rows] == "V1"
        inner = geometry.distance[rows][v1] < np.median(geometry.distance[rows][v1])
        assert maps.eccentricity[rows][v1][inner].mean() < maps.eccentricity[rows][v1][~inner].mean()
    # anatomically matching vertices (rh mirrored onto lh on the white surface) see mirrored positions
    unjittered = SyntheticConfig(vertices_per_hemisphere=800, jitter=0.0)
    region = build_region(unjittered, np.random.default_rng(0))
    mirror = plant_maps(region, n_layers=N_LAYERS, cfg=unjittered, rng=np.random.default_rng(0))
    left = white.lh.coords[region.fsaverage_index[region.hemisphere == "lh"]].astype(np.float64)
    right = white.rh.coords[region.fsaverage_index[region.hemisphere == "rh"]].astype(np.float64) * [-1, 1, 1]
    nearest = np.argmin(np.linalg.norm(right[:, None] - left[None], axis=2), axis=1)
    lx, ly = mirror.space[region.hemisphere == "lh"].T
    rx, ry = mirror.space[region.hemisphere == "rh"].T
    assert np.corrcoef(rx, -lx[nearest])[0, 1] > 0.5 and np.corrcoef(ry, ly[nearest])[0, 1] > 0.5


def test_maps_are_smooth_over_the_cortex(planted) -> None:
    _, geometry, maps = planted
    pairs = mesh_neighbours(geometry.hemisphere, geometry.fsaverage_index)
    random_pairs = np.random.default_rng(0).integers(0, geometry.n_vertices, pairs.shape)
    # random fields: length scales of 25-30 mm against ~3.8 mm between neighbours; the retinotopic map
    # is continuous but steep (each ring spans the whole eccentricity range)
    limits = ((maps.noise_ceiling, 0.25), (maps.readout_fields[:, 0], 0.25), (maps.readout_fields[:, 1], 0.25),
              (maps.preferred_layer, 0.25), (maps.space[:, 0], 0.5), (maps.space[:, 1], 0.5))
    for values, limit in limits:
        near = np.abs(values[pairs[:, 0]] - values[pairs[:, 1]]).mean()
        far = np.abs(values[random_pairs[:, 0]] - values[random_pairs[:, 1]]).mean()
        assert near < limit * far
    assert np.allclose(np.linalg.norm(maps.readout_fields, axis=1), 1.0, atol=1e-5)


def test_noise_ceiling_map_has_the_target_mean_and_spread(planted) -> None:
    cfg, _, maps = planted
    assert maps.noise_ceiling.mean() == pytest.approx(cfg.noise_ceiling, abs=1e-3)
    assert maps.noise_ceiling.min() >= cfg.noise_ceiling - cfg.noise_ceiling_spread - 1e-6
    assert maps.noise_ceiling.max() <= cfg.noise_ceiling + cfg.noise_ceiling_spread + 1e-6
    assert maps.noise_ceiling.max() - maps.noise_ceiling.min() > 1.8 * cfg.noise_ceiling_spread
    high = SyntheticConfig(vertices_per_hemisphere=100, noise_ceiling=0.95)
    region = build_region(high, np.random.default_rng(0))
    ceiling = plant_maps(region, n_layers=4, cfg=high, rng=np.random.default_rng(0)).noise_ceiling
    assert ceiling.max() <= 0.99 and ceiling.mean() == pytest.approx(0.95, abs=1e-3)


def test_subjects_get_their_own_maps_and_seeds_reproduce() -> None:
    cfg = SyntheticConfig(vertices_per_hemisphere=300)
    first = build_region(cfg, np.random.default_rng(1))
    again = build_region(cfg, np.random.default_rng(1))
    other = build_region(cfg, np.random.default_rng(2))
    assert np.array_equal(first.fsaverage_index, again.fsaverage_index) and np.array_equal(first.area, again.area)
    assert first.record != other.record
    assert not np.array_equal(first.area, other.area) or not np.array_equal(first.fsaverage_index, other.fsaverage_index)
    maps_a = plant_maps(first, n_layers=8, cfg=cfg, rng=np.random.default_rng(5))
    maps_b = plant_maps(first, n_layers=8, cfg=cfg, rng=np.random.default_rng(5))
    maps_c = plant_maps(first, n_layers=8, cfg=cfg, rng=np.random.default_rng(6))
    assert np.array_equal(maps_a.layer_weights, maps_b.layer_weights)
    assert not np.allclose(maps_a.readout_fields, maps_c.readout_fields)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="noise_ceiling"):
        SyntheticConfig(noise_ceiling=40.0)
    with pytest.raises(ConfigError, match="band_fractions"):
        build_config(SyntheticConfig, {"band_fractions": [0.3, 0.3, 0.3, 0.3]})
    with pytest.raises(ConfigError, match="unknown key"):
        build_config(SyntheticConfig, {"noise": 0.3})
