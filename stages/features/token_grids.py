"""Resize a block's local tokens from the model's own grid to the store's fixed grids.

Method (stage one): bilinear interpolation with ``align_corners=False``, the
reference's ``F.interpolate`` call. When the model grid is larger than the store
grid (a CNN's 112x112 block to 8x8), plain bilinear reads only the 2x2 source
tokens nearest each output point and ignores the rest; ``antialias=True`` widens
the bilinear (triangle) filter by the reduction factor so every source token
contributes, as image resizers do. It changes nothing when the grid grows or
stays equal. The choice is part of the store's provenance.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from stages.models.base import LayerTokens

#: The largest store grid side: the finest token grid of any registered model (the first blocks of mobilenet_v2
#: and efficientnet_lite0, 112x112 at 224 px). A finer store grid would only interpolate between tokens, while the
#: store grows with the square of its grid.
MAX_GRID = 112


def resize_tokens(local: torch.Tensor, grid: int, *, antialias: bool) -> torch.Tensor:
    """Local tokens of shape (n_images, n_channels, h, w) -> (n_images, n_channels, grid, grid), float32.

    Computed in float32 whatever the input dtype (bf16/fp16 under autocast), so the
    resize adds no rounding beyond the store's own dtype.
    """
    local = local.float()
    if tuple(local.shape[-2:]) == (grid, grid):
        return local
    downsampling = local.shape[-2] > grid or local.shape[-1] > grid
    return F.interpolate(local, size=(grid, grid), mode="bilinear", align_corners=False,
                         antialias=antialias and downsampling)


def tokens_to_numpy(layers: Sequence[LayerTokens], grids: Sequence[int], *, antialias: bool, dtype: str
                    ) -> tuple[dict[int, list], list]:
    """One batch's blocks as host arrays in the store's dtype.

    Returns ``(local, global_)`` with ``local[grid][layer]`` of shape
    (n_images, n_channels_l, grid, grid) and ``global_[layer]`` of shape (n_images, n_channels_l).
    """
    target = getattr(torch, dtype)
    local = {grid: [resize_tokens(layer.local, grid, antialias=antialias).to(target).cpu().numpy() for layer in layers]
             for grid in grids}
    global_ = [layer.global_.float().to(target).cpu().numpy() for layer in layers]
    return local, global_
