"""Fixed sinusoidal encoding of cortical sphere coordinates: the selectors' input.

The encoding is what makes neighbouring vertices choose alike: the selectors are
smooth functions of it. It has no parameters and carries no gradient.
"""

from __future__ import annotations

import torch

#: The span of the longest axis after normalisation (the method's 0..100).
COORDINATE_SPAN = 100.0
#: Base of the log-spaced frequencies: omega_k = FREQUENCY_BASE ** (-k / n_frequencies).
FREQUENCY_BASE = 1000.0


def normalise_coordinates(coords: torch.Tensor) -> torch.Tensor:
    """Shift a point set so its minimum is 0 and scale it isotropically so its longest axis spans 0..100.

    Args:
        coords: float tensor of shape (n_vertices, 3).

    Returns:
        float32 tensor of shape (n_vertices, 3).
    """
    coords = coords.to(torch.float32)
    shifted = coords - coords.min(dim=0).values
    longest = shifted.max(dim=0).values.max().clamp_min(1e-12)
    return shifted * (COORDINATE_SPAN / longest)


def encode_positions(coords: torch.Tensor, *, n_frequencies: int = 32) -> torch.Tensor:
    """Sinusoidal features of normalised coordinates.

    For each axis and each frequency ``omega_k = 1000 ** (-k / n_frequencies)``, k = 0..n-1,
    emits ``sin(omega_k * p)`` and ``cos(omega_k * p)``.

    Args:
        coords: float tensor of shape (n_vertices, 3), already normalised with
            :func:`normalise_coordinates` (normalise the union of all vertex sets that
            must share an encoding, e.g. several subjects on fsaverage).
        n_frequencies: frequencies per axis (the method: 32, giving 192 features).

    Returns:
        float32 tensor of shape (n_vertices, 3 * 2 * n_frequencies), ordered axis-major:
        for each axis, the sines of all frequencies then their cosines.
    """
    k = torch.arange(n_frequencies, dtype=torch.float64)
    omega = (FREQUENCY_BASE ** (-k / n_frequencies)).to(torch.float32)
    phase = coords.to(torch.float32)[:, :, None] * omega  # (n_vertices, 3, n_frequencies)
    return torch.cat([phase.sin(), phase.cos()], dim=2).reshape(coords.shape[0], -1)


def encoding_width(n_frequencies: int) -> int:
    """Number of features :func:`encode_positions` emits (192 for 32 frequencies)."""
    return 3 * 2 * n_frequencies
