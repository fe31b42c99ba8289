"""Top channels per ROI: what each area reads from an image, as an RGB picture (method.md).

For each ROI: the 3 principal directions (PCA) of the ROI's rows of the read-out W; the
ROI's mean layer weights; each layer's full-resolution local tokens passed through that
layer's fitted bottleneck, resized to a common grid and combined with those weights; the
result projected onto the 3 directions gives an RGB image, each channel clipped to its
5th-95th percentile and scaled to 0..1. :func:`render_model_top_channels` runs a feature model
on images and draws one such figure per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from cache.errors import InvalidInputError
from stages.fit.result import FitResult
from stages.models.base import FeatureModel
from stages.models.preprocess import image_to_tensor
from stages.report.summaries import canonical_area

#: The ROIs of the reference's top-channel figure.
TOP_CHANNEL_ROIS = ("V1", "V2", "V3", "V4", "EBA", "FBA", "OFA", "FFA", "OPA", "PPA", "OWFA", "VWFA")


@dataclass(frozen=True)
class RoiChannels:
    """One ROI's read-out directions and layer mix.

    Attributes:
        roi: area name.
        components: float array of shape (3, n_channels), unit-length principal directions of
            the ROI's read-out rows (sign: largest loading positive).
        layer_weights: float array of shape (n_layers,), the ROI's mean layer weights.
    """

    roi: str
    components: np.ndarray
    layer_weights: np.ndarray


def roi_channels(fit: FitResult, readout: np.ndarray, *, rois: Sequence[str] = TOP_CHANNEL_ROIS) -> list[RoiChannels]:
    """PCA of each ROI's read-out rows (ROIs with fewer than 3 vertices are skipped).

    Args:
        fit: the fit (ROI labels, layer weights).
        readout: float array of shape (n_vertices, n_channels), the read-out W.
        rois: areas to include, in this order.
    """
    readout = np.asarray(readout, dtype=np.float64)
    if readout.shape[0] != fit.n_vertices or readout.ndim != 2:
        raise InvalidInputError(f"read-out has shape {readout.shape}; expected ({fit.n_vertices}, n_channels)")
    areas = np.array([canonical_area(roi) for roi in np.asarray(fit.vertices["roi"]).astype(str)])
    weights = fit.layer_weights.astype(np.float64)
    found = []
    for roi in rois:
        rows = readout[areas == roi]
        if len(rows) < 3:
            continue
        _, _, directions = np.linalg.svd(rows - rows.mean(axis=0), full_matrices=False)
        components = directions[:3]
        if len(components) < 3:
            continue
        signs = np.sign(components[np.arange(3), np.abs(components).argmax(axis=1)])
        found.append(RoiChannels(roi, components * signs[:, None], weights[areas == roi].mean(axis=0)))
    return found


def bottleneck_tokens(local: Sequence[np.ndarray], bottlenecks: Sequence[np.ndarray]) -> np.ndarray:
    """Each layer's local tokens through its bottleneck, on the finest layer's grid.

    Args:
        local: per layer, float array of shape (n_channels_l, h_l, w_l) (one image, full resolution).
        bottlenecks: per layer, float array of shape (n_bottleneck, n_channels_l) (the 1x1 conv).

    Returns:
        float32 array of shape (n_layers, n_bottleneck, height, width).
    """
    if len(local) != len(bottlenecks):
        raise InvalidInputError(f"{len(local)} token layers but {len(bottlenecks)} bottlenecks")
    height = max(tokens.shape[1] for tokens in local)
    width = max(tokens.shape[2] for tokens in local)
    out = []
    for tokens, weight in zip(local, bottlenecks):
        if weight.shape[1] != tokens.shape[0]:
            raise InvalidInputError(f"bottleneck of shape {weight.shape} does not fit tokens of {tokens.shape[0]} channels")
        projected = torch.from_numpy(np.einsum("dc,chw->dhw", weight, tokens).astype(np.float32))[None]
        resized = torch.nn.functional.interpolate(projected, size=(height, width), mode="bilinear", align_corners=False)
        out.append(resized[0].numpy())
    return np.stack(out)


def top_channel_rgb(tokens: np.ndarray, channels: RoiChannels) -> np.ndarray:
    """RGB image (height, width, 3) in 0..1 of one ROI's directions over bottlenecked tokens.

    Args:
        tokens: float array of shape (n_layers, n_bottleneck, height, width) from :func:`bottleneck_tokens`.
        channels: the ROI's directions and layer mix.
    """
    combined = np.tensordot(channels.layer_weights, tokens, axes=(0, 0))      # (D, H, W)
    projected = np.tensordot(channels.components, combined, axes=(1, 0))       # (3, H, W)
    low = np.percentile(projected, 5, axis=(1, 2), keepdims=True)
    high = np.percentile(projected, 95, axis=(1, 2), keepdims=True)
    scaled = (np.clip(projected, low, high) - low) / np.maximum(high - low, 1e-12)
    return np.clip(np.moveaxis(scaled, 0, -1), 0.0, 1.0)


def render_top_channels(image: np.ndarray, maps: Mapping[str, np.ndarray], *, title: str = "") -> Figure:
    """The input image, then one panel per ROI with its top-channel RGB image over the same extent.

    Args:
        image: array of shape (height, width, 3), uint8 or float in 0..1.
        maps: ROI -> float array (h, w, 3) from :func:`top_channel_rgb`.
    """
    n_panels = 1 + len(maps)
    n_cols = min(n_panels, 7)
    n_rows = -(-n_panels // n_cols)
    figure = Figure(figsize=(1.8 * n_cols, 1.9 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    extent = (0, image.shape[1], image.shape[0], 0)
    axes[0].imshow(image, extent=extent)
    axes[0].set_title("image", fontsize=8)
    for ax, (roi, rgb) in zip(axes[1:], maps.items()):
        ax.imshow(rgb, extent=extent, interpolation="bilinear")
        ax.set_title(roi, fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=9)
    return figure


def render_model_top_channels(model: FeatureModel, images: Iterable[Image.Image], *, layers: Sequence[int],
                              bottlenecks: Sequence[np.ndarray], channels: Sequence[RoiChannels],
                              title: str = "") -> list[Figure]:
    """One :func:`render_top_channels` figure per image: ``model``'s local tokens of the fitted layers, through
    the fit's bottlenecks, seen through each ROI's directions.

    Args:
        model: the feature model the fit was made on.
        images: decoded RGB images (taken one at a time, so a generator keeps one in memory).
        layers: per fitted layer, its index among ``model.info.layer_names``.
        bottlenecks: per fitted layer, float array of shape (n_bottleneck, n_channels_l).
        channels: the ROIs' directions and layer mixes (:func:`roi_channels`).
        title: suptitle of every figure.
    """
    figures = []
    for picture in images:
        with torch.no_grad():
            tokens = model(image_to_tensor(picture, model.info.preprocessing)[None])
        projected = bottleneck_tokens([tokens[i].local[0].float().numpy() for i in layers], bottlenecks)
        maps = {c.roi: top_channel_rgb(projected, c) for c in channels}
        figures.append(render_top_channels(np.asarray(picture), maps, title=title))
    return figures
