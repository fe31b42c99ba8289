"""Top-channel figures of a FactorTopy fit for user images: the file side.

Needs the fit's weights file (its local bottleneck per fitted layer and its read-out, read through
:mod:`stages.fit.weights_file`), images decoded by the image-folder policy
(:func:`pipeline.imagesets.folder.decode_image`), and the feature model from the registry, rebuilt
as the feature store recorded it (trained weights, or random init with the recorded seed);
:func:`stages.report.topchannels.render_model_top_channels` does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cache.errors import InvalidInputError
from pipeline.imagesets.folder import decode_image
from pipeline.report.inputs import ReportInput
from stages.fit.weights_file import read_fit_weights
from stages.models.base import FeatureModel
from stages.models.registry import load_model
from stages.report.topchannels import render_model_top_channels, roi_channels


def read_bottlenecks(item: ReportInput) -> list[np.ndarray] | None:
    """Per fitted layer, the local bottleneck (n_bottleneck, n_channels_l); None when the fit has none."""
    weights = read_fit_weights(item.source)
    n_layers = len(item.fit.layer_names)
    if weights is None or len(weights.local_bottlenecks) < n_layers:
        return None
    return list(weights.local_bottlenecks[:n_layers])


def top_channel_figures(item: ReportInput, images: Sequence[Path]) -> list[tuple[str, object]]:
    """``(image stem, figure)`` per image file for a fit with read-out and bottlenecks; [] when it lacks them.

    Raises InvalidInputError naming the file when an image breaks the decoding policy.
    """
    if item.readout is None:
        return []
    bottlenecks = read_bottlenecks(item)
    if bottlenecks is None:
        return []
    channels = roi_channels(item.fit, item.readout)
    if not channels:
        return []
    model = _feature_model(item)
    names = list(model.info.layer_names)
    missing = [name for name in item.fit.layer_names if name not in names]
    if missing:
        raise InvalidInputError(f"model {item.fit.model} has no layers {missing} of fit {item.source}")
    layers = [names.index(name) for name in item.fit.layer_names]
    figures = render_model_top_channels(model, (decode_image(path) for path in images), layers=layers,
                                        bottlenecks=bottlenecks, channels=channels,
                                        title=f"top channels: {item.fit.model} / {item.fit.subject}")
    return [(Path(path).stem, figure) for path, figure in zip(images, figures)]


def _feature_model(item: ReportInput) -> FeatureModel:
    store = item.fit.provenance.get("store", {}).get("provenance", {}) if isinstance(
        item.fit.provenance.get("store"), dict) else {}
    random_init = store.get("model", {}).get("weights") == "random-init"
    if random_init:
        torch.manual_seed(int(store.get("seed") or 0))
    return load_model(item.fit.model, pretrained=not random_init)
