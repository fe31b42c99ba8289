"""The contract every feature model fulfils.

Whatever library serves a network (transformers, timm, torchvision), stage one
sees one shape of result: per block, the local tokens on the model's own patch
grid and one global token. Downstream code never asks which library it was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class LayerTokens:
    """One block's output for a batch.

    Attributes:
        local: tensor of shape (n_images, n_channels, height, width): patch tokens on
            the model's own grid (class and register tokens removed).
        global_: tensor of shape (n_images, n_channels): the class token after this
            block, or the spatial mean of ``local`` for models without one.
    """

    local: torch.Tensor
    global_: torch.Tensor


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB 8-bit image becomes the model's input tensor; recorded in provenance.

    Attributes:
        size: (height, width) of the network input in pixels.
        mean, std: per-channel normalisation applied to values scaled to 0..1.
        resize: ``"squash"`` (resize to ``size``, aspect not kept: the reference
            behaviour), ``"shorter_crop"`` (resize the shorter side then centre-crop) or
            ``"longest_pad"`` (resize the longer side to fit, then pad the bottom and right
            with zeros after normalisation: SAM's own input transform).
        interpolation: ``"bicubic"`` or ``"bilinear"``.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "squash"
    interpolation: str = "bicubic"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of the preprocessing."""
        return asdict(self)


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model reports about itself, for provenance and ``bddn models``.

    Attributes:
        model_id: the registry name as the user spelled it (``"clip"``, ``"timm:vit_tiny_patch16_224"``).
        source: the library and checkpoint it was loaded from (hub id, directory or file).
        weights: a weights revision or SHA-256 of the weights file, or ``"random-init"``.
        layer_names: one name per block, in depth order.
        n_channels: channel width per block (may differ between blocks).
        preprocessing: the input transform this model expects.
        extra: any further settings that change the features (e.g. mask ratio forced to 0).
    """

    model_id: str
    source: str
    weights: str
    layer_names: tuple[str, ...]
    n_channels: tuple[int, ...]
    preprocessing: Preprocessing
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of the model's identity."""
        record = asdict(self)
        record["layer_names"] = list(self.layer_names)
        record["n_channels"] = list(self.n_channels)
        return record


class FeatureModel(torch.nn.Module):
    """A frozen backbone that returns one :class:`LayerTokens` per block.

    Subclasses set ``info`` and implement :meth:`forward` taking a normalised
    input batch of shape (n_images, 3, height, width) and returning a list with
    one ``LayerTokens`` per entry of ``info.layer_names``.
    """

    info: ModelInfo

    def forward(self, pixels: torch.Tensor) -> list[LayerTokens]:  # pragma: no cover - abstract
        raise NotImplementedError
