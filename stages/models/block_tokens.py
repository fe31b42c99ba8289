"""Shared machinery of every backbone wrapper: freezing and turning block outputs into tokens.

Libraries return block outputs in three layouts: a token sequence (n_images, n_tokens,
n_channels) with class/register tokens first (ViTs), a channels-last grid
(n_images, height, width, n_channels) (SAM's windowed blocks) and a channels-first
grid (n_images, n_channels, height, width) (CNNs). Each becomes one :class:`LayerTokens`.
"""

from __future__ import annotations

import torch

from cache.errors import InvalidInputError
from stages.models.base import FeatureModel, LayerTokens, ModelInfo


class FrozenFeatureModel(FeatureModel):
    """A :class:`FeatureModel` whose backbone stays in eval mode with frozen parameters.

    Subclasses implement :meth:`block_tokens`; :meth:`forward` checks the input and runs
    it under ``torch.no_grad``. ``train()`` never switches dropout or batch-norm statistics on.
    """

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenFeatureModel":
        """Keep the backbone in eval mode whatever ``mode`` says (it is a fixed feature extractor)."""
        return super().train(False)

    def forward(self, pixels: torch.Tensor) -> list[LayerTokens]:
        """Per-block tokens of a normalised batch of shape (n_images, 3, height, width)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InvalidInputError(
                f"{self.info.model_id}: input of shape {tuple(pixels.shape)}; expected (n_images, 3, height, width)"
            )
        with torch.no_grad():
            tokens = self.block_tokens(pixels)
        if len(tokens) != self.info.n_layers:
            raise RuntimeError(f"{self.info.model_id}: {len(tokens)} block outputs for {self.info.n_layers} layers")
        return tokens

    def block_tokens(self, pixels: torch.Tensor) -> list[LayerTokens]:  # pragma: no cover - abstract
        raise NotImplementedError


class StemBlocksModel(FrozenFeatureModel):
    """A CNN run as a stem, then its blocks one after another; each block's output map is one
    :class:`LayerTokens` (global token = spatial mean)."""

    def __init__(self, backbone: torch.nn.Module, *, info: ModelInfo, stem: torch.nn.Module,
                 blocks: list[torch.nn.Module]) -> None:
        super().__init__(backbone)
        self.info = info
        self.stem = stem
        self.blocks = torch.nn.ModuleList(blocks)

    def block_tokens(self, pixels: torch.Tensor) -> list[LayerTokens]:
        hidden = self.stem(pixels)
        tokens = []
        for block in self.blocks:
            hidden = block(hidden)
            tokens.append(grid_tokens(hidden))
        return tokens


def block_widths(module: torch.nn.Module, stem: torch.nn.Module, blocks: list[torch.nn.Module]) -> tuple[int, ...]:
    """n_channels of each block's output, from one small dry run (64x64 zeros) in eval mode."""
    was_training = module.training
    module.eval()
    widths = []
    with torch.no_grad():
        parameter = next(module.parameters())
        hidden = stem(torch.zeros(1, 3, 64, 64, dtype=parameter.dtype, device=parameter.device))
        for block in blocks:
            hidden = block(hidden)
            widths.append(int(hidden.shape[1]))
    module.train(was_training)
    return tuple(widths)


def sequence_tokens(
    hidden: torch.Tensor, *, grid: tuple[int, int], n_prefix: int, class_index: int | None
) -> LayerTokens:
    """Tokens from a ViT block output of shape (n_images, n_prefix + h * w, n_channels).

    ``n_prefix`` leading tokens (class and register tokens) are dropped from the local grid;
    ``class_index`` picks the global token among them (``None``: the spatial mean).
    """
    n_images, n_tokens, n_channels = hidden.shape
    height, width = grid
    if n_tokens != n_prefix + height * width:
        raise RuntimeError(f"{n_tokens} tokens do not make {n_prefix} prefix tokens plus a {height}x{width} grid")
    patches = hidden[:, n_prefix:, :]
    local = patches.transpose(1, 2).reshape(n_images, n_channels, height, width)
    global_ = hidden[:, class_index, :] if class_index is not None else patches.mean(dim=1)
    return LayerTokens(local=local, global_=global_)


def grid_tokens(local: torch.Tensor, *, channels_last: bool = False, class_token: torch.Tensor | None = None) -> LayerTokens:
    """Tokens from a spatial block output (n_images, n_channels, h, w), or (n_images, h, w, n_channels)
    when ``channels_last``; the global token is ``class_token`` when given, else the spatial mean."""
    if channels_last:
        local = local.permute(0, 3, 1, 2)
    global_ = class_token if class_token is not None else local.mean(dim=(2, 3))
    return LayerTokens(local=local, global_=global_)


def first_output(output: object) -> torch.Tensor:
    """The hidden-state tensor of a block's output (libraries return a tensor or a tuple led by it)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise RuntimeError(f"unexpected block output of type {type(output).__name__}")
