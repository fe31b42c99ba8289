"""Relative depth: a layer index as a fraction of the network's depth, so that networks of any depth share one scale.

``relative_depth = layer index / (n_layers - 1)``: 0 is the first layer, 1 the last, whatever
the network (12 blocks of a ViT, 17 layers of EfficientNet-Lite0, 19 of MobileNetV2). A vertex's
relative depth is that of its expected layer (``layer_mean``, the layer weights' mean index: the
layer selector's expectation for FactorTopy, the chosen layer for a method with one-hot weights).
Its maps use one fixed colour scale, :data:`DEPTH_RANGE` through the layer map's colormap, so
maps of different networks are read against one colour bar.

The hierarchy score (:func:`stages.report.summaries.score_hierarchy`) is depth-invariant: it is a
rank correlation of the areas' mean expected layers, and dividing every layer index by
``n_layers - 1`` divides every area mean by the same positive number, which keeps their ranks.
Scores of networks of different depths are therefore compared as they are.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from cache.errors import InvalidInputError
from stages.fit.result import FitResult

#: Column name of the derived per-vertex relative depth (maps, exports, viewer readout).
DEPTH_COLUMN = "relative_depth"
#: The fixed colour scale of every relative-depth map.
DEPTH_RANGE = (0.0, 1.0)


def relative_depth(layer_index: np.ndarray | float, n_layers: int) -> np.ndarray:
    """``layer_index / (n_layers - 1)`` as float64 (any shape; fractional indices allowed); 0 for one layer."""
    if n_layers < 1:
        raise InvalidInputError(f"relative depth needs at least one layer, got n_layers={n_layers}")
    return np.asarray(layer_index, dtype=np.float64) / max(n_layers - 1, 1)


def fit_relative_depth(fit: FitResult) -> np.ndarray:
    """Relative depth of each vertex's expected layer: float64 array of shape (n_vertices,), in 0..1."""
    return relative_depth(fit.vertices["layer_mean"], len(fit.layer_names))


def mixed_depths(fits: Iterable[FitResult]) -> bool:
    """True when ``fits`` come from networks with different numbers of layers (then layer indices do not
    compare, relative depths do)."""
    return len({len(fit.layer_names) for fit in fits}) > 1


def comparison_maps(fits: Iterable[FitResult]) -> tuple[str, ...]:
    """The map columns of a grid comparing ``fits``: layer, space and scale, with relative depth in place of the
    layer map when the fits' networks have different numbers of layers."""
    return (DEPTH_COLUMN if mixed_depths(fits) else "layer", "space", "scale")
