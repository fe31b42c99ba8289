"""The three selector MLPs of FactorTopy: per-vertex space, layer and scale from the encoded position.

Each selector is ``Linear(n_features, hidden) -> GELU -> Linear(hidden, hidden) -> GELU ->
Linear(hidden, k, bias=False)`` with the last layer initialised to zero, so every vertex
starts undecided: at the image centre, with uniform layer weights and scale 0.5.
"""

from __future__ import annotations

import torch
from torch import nn


class SelectorMLP(nn.Module):
    """A zero-initialised MLP head mapping encoded positions to ``n_outputs`` raw values.

    Args:
        n_features: width of the positional encoding (192 in the method).
        hidden: width of the two hidden layers (128 in the method).
        n_outputs: k, the number of raw outputs (2 for space, n_layers for layer, 1 for scale).
    """

    def __init__(self, n_features: int, hidden: int, n_outputs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(),
                                  nn.Linear(hidden, hidden), nn.GELU())
        self.head = nn.Linear(hidden, n_outputs, bias=False)
        nn.init.zeros_(self.head.weight)

    def forward(self, encoding: torch.Tensor) -> torch.Tensor:
        """Raw (pre-activation) outputs, tensor of shape (n_vertices, n_outputs)."""
        return self.head(self.body(encoding))


class Selectors(nn.Module):
    """The space, layer and scale selectors with their output activations.

    Args:
        n_features: width of the positional encoding.
        hidden: hidden width of each MLP.
        n_layers: number of network layers to choose among.
        n_scales: 1 for the reference sigmoid local/global mix; the number of pyramid
            levels (softmax over levels) otherwise.
    """

    def __init__(self, n_features: int, hidden: int, n_layers: int, n_scales: int = 1) -> None:
        super().__init__()
        self.space = SelectorMLP(n_features, hidden, 2)
        self.layer = SelectorMLP(n_features, hidden, n_layers)
        self.scale = SelectorMLP(n_features, hidden, n_scales)

    def forward(self, encoding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-vertex selections from encodings of shape (n_vertices, n_features).

        Returns:
            space: (n_vertices, 2) in (-1, 1), grid_sample convention (x left->right, y top->bottom);
            layer: (n_vertices, n_layers), rows summing to 1;
            scale: (n_vertices,) in (0, 1) for the sigmoid mix, or (n_vertices, n_scales)
            softmax weights over pyramid levels when ``n_scales > 1``.
        """
        space = torch.tanh(self.space(encoding))
        layer = torch.softmax(self.layer(encoding), dim=-1)
        raw_scale = self.scale(encoding)
        if raw_scale.shape[1] == 1:
            scale = torch.sigmoid(raw_scale[:, 0])
        else:
            scale = torch.softmax(raw_scale, dim=-1)
        return space, layer, scale
