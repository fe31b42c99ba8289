"""Settings of the synthetic subject: region size, planted maps, noise, split.

Every field is in the subject's ``planted_truth.json``. Image-space quantities
(eccentricity, receptive-field size) are in the units of the selectors' space map:
the image spans -1..1 along x and y (``torch.nn.functional.grid_sample``,
``align_corners=False``), so a size of 0.25 is one cell of an 8x8 grid.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache.errors import ConfigError


@dataclass(frozen=True)
class SyntheticConfig:
    """How a synthetic subject is planted and generated.

    Attributes:
        vertices_per_hemisphere: size of the posterior region per hemisphere (fsaverage5 vertices
            nearest the occipital pole on the registration sphere, medial wall excluded).
        band_fractions: share of the region's vertices in V1, V2, V3 and V4 (rings outward from
            the pole); the rest, beyond V4, is higher cortex holding the category-like patches.
        layer_range: preferred layer of V1 and of higher cortex as a fraction of network depth
            (0 = first block, 1 = last); V2..V4 lie evenly between.
        layer_width: standard deviation, in layers, of each vertex's Gaussian mixture over layers.
        layer_jitter: amplitude (layers) of a smooth random field added to the preferred layer.
        eccentricity_range: smallest and largest receptive-field eccentricity in image units.
        rf_size_range: receptive-field size (Gaussian pooling sigma, image units) in V1 and in
            higher cortex; it also grows by up to 50 % with eccentricity.
        scale_range: globality (weight of the global token) in V1 and in higher cortex.
        n_readouts: random channel read-out directions per layer, mixed by smooth fields.
        readout_length_scale: length scale (mm on the radius-100 sphere) of the read-out fields.
        nonlinearity: sharpness of the output softplus ``softplus(k x) / k``; 0 = linear.
        noise_ceiling: mean target noise ceiling (fraction of variance, 0..1) of the responses.
        noise_ceiling_spread: half range of the smooth noise-ceiling field around its mean
            (reduced where the mean is close to 0 or 1).
        n_repeats: simulated repeats averaged per image (NSD: 3); the noise ceiling refers to the average.
        jitter: between-subject variation of the maps (0 = every subject has the same geometry).
        test_fraction: share of images in the test split (the same images for every subject).
        split_seed: seed of the train/test split.
        batch_size: images per feature batch while generating.
    """

    vertices_per_hemisphere: int = 1200
    band_fractions: tuple[float, ...] = (0.14, 0.14, 0.14, 0.14)
    layer_range: tuple[float, float] = (0.1, 0.9)
    layer_width: float = 1.0
    layer_jitter: float = 0.4
    eccentricity_range: tuple[float, float] = (0.05, 0.8)
    rf_size_range: tuple[float, float] = (0.13, 0.55)
    scale_range: tuple[float, float] = (0.05, 0.6)
    n_readouts: int = 8
    readout_length_scale: float = 25.0
    nonlinearity: float = 1.0
    noise_ceiling: float = 0.4
    noise_ceiling_spread: float = 0.15
    n_repeats: int = 3
    jitter: float = 1.0
    test_fraction: float = 0.1
    split_seed: int = 0
    batch_size: int = 100

    def __post_init__(self) -> None:
        checks = [
            (self.vertices_per_hemisphere >= 50, "vertices_per_hemisphere must be at least 50"),
            (len(self.band_fractions) == 4 and all(f > 0 for f in self.band_fractions)
             and sum(self.band_fractions) < 0.95, "band_fractions: four positive shares (V1..V4) summing below 0.95"),
            (0.0 <= self.layer_range[0] <= self.layer_range[1] <= 1.0, "layer_range: 0 <= low <= high <= 1"),
            (self.layer_width > 0, "layer_width must be positive"),
            (self.layer_jitter >= 0, "layer_jitter must be >= 0"),
            (0.0 < self.eccentricity_range[0] < self.eccentricity_range[1] <= 1.0,
             "eccentricity_range: 0 < low < high <= 1"),
            (0.0 < self.rf_size_range[0] <= self.rf_size_range[1], "rf_size_range: 0 < low <= high"),
            (0.0 <= self.scale_range[0] <= self.scale_range[1] <= 1.0, "scale_range: 0 <= low <= high <= 1"),
            (self.n_readouts >= 1, "n_readouts must be at least 1"),
            (self.readout_length_scale > 0, "readout_length_scale must be positive"),
            (self.nonlinearity >= 0, "nonlinearity must be >= 0"),
            (0.02 <= self.noise_ceiling <= 0.98, "noise_ceiling must lie in 0.02..0.98 (a fraction, not percent)"),
            (self.noise_ceiling_spread >= 0, "noise_ceiling_spread must be >= 0"),
            (self.n_repeats >= 1, "n_repeats must be at least 1"),
            (self.jitter >= 0, "jitter must be >= 0"),
            (0.0 < self.test_fraction < 0.5, "test_fraction must lie in (0, 0.5)"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
        ]
        failed = [message for ok, message in checks if not ok]
        if failed:
            raise ConfigError("synthetic subject settings: " + "; ".join(failed))
