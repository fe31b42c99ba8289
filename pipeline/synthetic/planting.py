"""The planted answer: per-vertex layer profile, receptive field, globality, read-out and noise ceiling.

All maps are functions of the region geometry (:mod:`pipeline.synthetic.geometry`):

* **Hierarchy level** 0 (V1) .. 4 (higher cortex): a sum of four smooth steps at the ring
  edges (logistic, width a tenth of the neighbouring rings), so areas are plateaus joined
  by short ramps.
* **Layer profile**: preferred layer ``(L - 1) * (lo + (hi - lo) * level / 4)`` plus a smooth
  random field of amplitude ``layer_jitter``; each vertex mixes layers with Gaussian
  weights (sd ``layer_width`` layers) around it, normalised to sum 1.
* **Receptive-field centre** (retinotopy): polar angle ``(pi/2) sin(angle)`` (dorsal cortex ->
  lower visual field, ventral -> upper, lateral and medial -> horizontal meridian);
  eccentricity log-spaced across each ring, running outward in V1 and V3 and inward in V2
  and V4 (mirror reversals at the area borders, continuous), and from the fovea outward
  to the geometric mean of the range in higher cortex. The left hemisphere sees the right
  visual field (x > 0), the right the left. Image coordinates: x -1 left .. +1 right,
  y -1 top .. +1 bottom.
* **Receptive-field size** (Gaussian pooling sigma, image units): log-spaced from
  ``rf_size_range[0]`` (V1) to ``[1]`` (level 4), times ``1 + 0.5 * e``, e the eccentricity
  scaled to 0..1.
* **Globality** (weight of the global token): ``lo + (hi - lo) * (level / 4) ** 1.5``.
* **Read-out fields**: ``n_readouts`` smooth random fields, each vertex's vector scaled to
  unit length; they mix the per-layer random read-out directions (see ``responses``).
* **Noise ceiling**: a smooth random field ranked onto a uniform spread
  ``mean +- spread`` (mean exactly ``noise_ceiling``).

Smooth random fields are random Fourier features of the sphere coordinates (a Gaussian
process with a squared-exponential kernel of the given length scale), drawn per hemisphere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from scipy.stats import rankdata

from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.geometry import RegionGeometry

N_LEVELS = 4
_STEP_WIDTH = 0.1
_FIELD_FEATURES = 256
_JITTER_LENGTH_SCALE = 20.0
_NOISE_LENGTH_SCALE = 30.0


@dataclass(frozen=True)
class PlantedMaps:
    """The planted per-vertex answer (rows follow the region's vertices).

    Attributes:
        level: float array of shape (n_vertices,): hierarchy level 0 (V1) .. 4 (higher).
        preferred_layer: float array of shape (n_vertices,): centre of the layer mixture.
        layer_weights: float32 array of shape (n_vertices, n_layers), rows sum to 1.
        eccentricity, polar_angle: float arrays of shape (n_vertices,) (image units; radians,
            0 = horizontal meridian, +pi/2 = lower vertical meridian).
        space: float32 array of shape (n_vertices, 2): receptive-field centre (x, y) in [-1, 1].
        rf_size: float32 array of shape (n_vertices,): Gaussian pooling sigma in image units.
        scale: float32 array of shape (n_vertices,): globality 0 (local) .. 1 (global token).
        readout_fields: float32 array of shape (n_vertices, n_readouts), unit rows.
        noise_ceiling: float32 array of shape (n_vertices,), fraction 0..1.
    """

    level: np.ndarray
    preferred_layer: np.ndarray
    layer_weights: np.ndarray
    eccentricity: np.ndarray
    polar_angle: np.ndarray
    space: np.ndarray
    rf_size: np.ndarray
    scale: np.ndarray
    readout_fields: np.ndarray
    noise_ceiling: np.ndarray


def plant_maps(geometry: RegionGeometry, *, n_layers: int, cfg: SyntheticConfig,
               rng: np.random.Generator) -> PlantedMaps:
    """Draw the planted maps of one subject for a network with ``n_layers`` blocks."""
    level = hierarchy_level(geometry.distance, geometry.edges)
    fraction = level / N_LEVELS
    low, high = cfg.layer_range
    preferred = (n_layers - 1) * (low + (high - low) * fraction)
    preferred = preferred + cfg.layer_jitter * smooth_field(geometry, length_scale=_JITTER_LENGTH_SCALE, rng=rng)
    preferred = np.clip(preferred, 0.0, n_layers - 1)
    weights = np.exp(-0.5 * ((np.arange(n_layers)[None, :] - preferred[:, None]) / cfg.layer_width) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)

    eccentricity = _eccentricity(geometry, cfg.eccentricity_range)
    polar = 0.5 * np.pi * np.sin(geometry.angle)
    field_side = np.where(geometry.hemisphere == "lh", 1.0, -1.0)
    space = np.stack([field_side * eccentricity * np.cos(polar), eccentricity * np.sin(polar)], axis=1)

    e_low, e_high = cfg.eccentricity_range
    size_low, size_high = cfg.rf_size_range
    rf_size = size_low * (size_high / size_low) ** fraction * (1.0 + 0.5 * (eccentricity - e_low) / (e_high - e_low))
    scale_low, scale_high = cfg.scale_range
    scale = scale_low + (scale_high - scale_low) * fraction ** 1.5

    fields = np.stack([smooth_field(geometry, length_scale=cfg.readout_length_scale, rng=rng)
                       for _ in range(cfg.n_readouts)], axis=1)
    fields /= np.maximum(np.linalg.norm(fields, axis=1, keepdims=True), 1e-12)

    return PlantedMaps(
        level=level, preferred_layer=preferred, layer_weights=weights.astype(np.float32),
        eccentricity=eccentricity, polar_angle=polar, space=space.astype(np.float32),
        rf_size=rf_size.astype(np.float32), scale=scale.astype(np.float32),
        readout_fields=fields.astype(np.float32),
        noise_ceiling=noise_ceiling_map(geometry, mean=cfg.noise_ceiling, spread=cfg.noise_ceiling_spread, rng=rng),
    )


def hierarchy_level(distance: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Smooth-stepped hierarchy level 0..4 from the distance to the pole.

    Args:
        distance: array of shape (n_vertices,).
        edges: array of shape (n_vertices, 6): 0, r1..r4, region radius (per vertex's hemisphere).
    """
    level = np.zeros_like(distance, dtype=np.float64)
    for i in range(1, 5):
        width = _STEP_WIDTH * (edges[:, i + 1] - edges[:, i - 1])
        level += expit((distance - edges[:, i]) / width)
    return level


def noise_ceiling_map(geometry: RegionGeometry, *, mean: float, spread: float,
                      rng: np.random.Generator) -> np.ndarray:
    """A smooth noise-ceiling field spread uniformly over ``mean +- spread`` (kept inside 0.01..0.99).

    Returns:
        float32 array of shape (n_vertices,) whose mean is ``mean``.
    """
    spread = max(0.0, min(spread, mean - 0.01, 0.99 - mean))
    field = smooth_field(geometry, length_scale=_NOISE_LENGTH_SCALE, rng=rng)
    uniform = 2.0 * (rankdata(field) - 0.5) / field.size - 1.0
    return (mean + spread * uniform).astype(np.float32)


def smooth_field(geometry: RegionGeometry, *, length_scale: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field over the region, zero mean and unit sd within each hemisphere.

    Random Fourier features of the sphere coordinates approximate a Gaussian process with a
    squared-exponential kernel of ``length_scale`` (mm); each hemisphere gets its own draw.

    Returns:
        float64 array of shape (n_vertices,).
    """
    field = np.zeros(geometry.n_vertices)
    for side in np.unique(geometry.hemisphere):
        rows = geometry.hemisphere == side
        frequencies = rng.normal(0.0, 1.0 / length_scale, (3, _FIELD_FEATURES))
        phases = rng.uniform(0.0, 2.0 * np.pi, _FIELD_FEATURES)
        amplitudes = rng.normal(0.0, 1.0, _FIELD_FEATURES)
        values = np.cos(geometry.sphere[rows] @ frequencies + phases) @ amplitudes
        field[rows] = (values - values.mean()) / max(values.std(), 1e-12)
    return field


def _eccentricity(geometry: RegionGeometry, eccentricity_range: tuple[float, float]) -> np.ndarray:
    """Log-spaced eccentricity across each ring, mirror-reversed at every area border."""
    low, high = eccentricity_range
    band = np.minimum(geometry.band, 4)
    inner = geometry.edges[np.arange(band.size), band]
    outer = geometry.edges[np.arange(band.size), band + 1]
    position = np.clip((geometry.distance - inner) / np.maximum(outer - inner, 1e-9), 0.0, 1.0)
    outward = np.where(band % 2 == 0, position, 1.0 - position)
    top = np.where(band == 4, np.sqrt(low * high), high)
    return low * (top / low) ** outward
