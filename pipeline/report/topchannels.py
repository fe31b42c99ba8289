"""Top-channel figures of a FactorTopy fit for user images: model, bottlenecks and read-out from files.

Needs the fit's ``weights.safetensors`` (``local_bottlenecks.<i>.weight`` per fitted layer and
the read-out) and the feature model from the registry, rebuilt as the feature store recorded
it (trained weights, or random init with the recorded seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from cache.errors import InvalidInputError, MissingInputError
from pipeline.report.inputs import ReportInput
from stages.fit.result import WEIGHTS_FILE
from stages.models.preprocess import image_to_tensor
from stages.models.registry import load_model
from stages.report.topchannels import bottleneck_tokens, render_top_channels, roi_channels, top_channel_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    if not folder.is_dir():
        raise MissingInputError(f"image folder {folder} does not exist; pass a folder of PNG/JPEG images")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise InvalidInputError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return images


def read_bottlenecks(item: ReportInput) -> list[np.ndarray] | None:
    """Per fitted layer, the local bottleneck (n_bottleneck, n_channels_l); None when the fit has none."""
    path = item.source / WEIGHTS_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    weights = [tensors.get(f"local_bottlenecks.{i}.weight") for i in range(len(item.fit.layer_names))]
    if any(w is None for w in weights):
        return None
    return [np.asarray(w, dtype=np.float32).reshape(w.shape[0], w.shape[1]) for w in weights]


def top_channel_figures(item: ReportInput, images: Sequence[Path]) -> list[tuple[str, object]]:
    """``(image stem, figure)`` per image for a fit with read-out and bottlenecks; [] when it lacks them."""
    bottlenecks = read_bottlenecks(item)
    if item.readout is None or bottlenecks is None:
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
    figures = []
    for path in images:
        with Image.open(path) as opened:
            picture = opened.convert("RGB")
        with torch.no_grad():
            tokens = model(image_to_tensor(picture, model.info.preprocessing)[None])
        local = [tokens[i].local[0].float().numpy() for i in layers]
        projected = bottleneck_tokens(local, bottlenecks)
        maps = {c.roi: top_channel_rgb(projected, c) for c in channels}
        figures.append((path.stem, render_top_channels(np.asarray(picture), maps,
                                                       title=f"top channels: {item.fit.model} / {item.fit.subject}")))
    return figures


def _feature_model(item: ReportInput) -> torch.nn.Module:
    store = item.fit.provenance.get("store", {}).get("provenance", {}) if isinstance(
        item.fit.provenance.get("store"), dict) else {}
    random_init = store.get("model", {}).get("weights") == "random-init"
    if random_init:
        torch.manual_seed(int(store.get("seed") or 0))
    return load_model(item.fit.model, pretrained=not random_init)
