"""The FactorTopy encoding model: per-vertex layer, space and scale selectors over frozen features.

Implements stage two of ``docs/method.md``: per-layer bottlenecks (local ``Conv1x1(C_l -> D)``,
global ``Linear(C_l -> D)``, no bias), three selector MLPs of the encoded sphere position
(space: tanh, layer: softmax, scale: sigmoid), the selection
``v = (1 - s) * sum_l w_l * bilinear_sample(local_l, space) + s * sum_l w_l * global_l`` and the
per-vertex mean read-out ``y = mean_d(v * W) + bias``. The arithmetic is reorganised (see
:mod:`stages.fit.readout`) but exact: the result equals the direct formulation to float
rounding, gradients included.

Options beyond the paper (``FactorTopyConfig``):

* ``scale_mode="pyramid"``: the scale is a receptive-field size. The bottlenecked local grid
  is average-pooled to a pyramid ``grid, grid/2, ..., 2`` (sampled at the vertex's point
  like the full grid), then ``1`` (the spatial mean) and finally the global token; the scale
  selector emits a softmax over these levels (uniform at start). ``Selections.scale`` is
  the expected level position in 0..1 (0 = finest local grid, 1 = global token), the
  per-level weights are in ``Selections.scale_levels``.
* several subjects: pass one coordinate set per subject. Bottlenecks and selectors are
  shared (coordinates live on the common fsaverage sphere and are normalised jointly),
  each subject has its own read-out ``(W, bias)``; ``forward``, ``selections`` and
  ``regulariser`` take ``subject=``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cache.errors import ConfigError, InvalidInputError
from stages.fit.encoding import encode_positions, encoding_width, normalise_coordinates
from stages.fit.readout import pad_tokens, pointwise_readout, sampled_readout
from stages.fit.selectors import Selectors

SCALE_MODES = ("mix", "pyramid")


@dataclass(frozen=True)
class FactorTopyConfig:
    """Architecture of the FactorTopy model (defaults = the reference).

    Attributes:
        bottleneck: D, channels of the per-layer bottleneck (reference 128).
        hidden: hidden width of each selector MLP (reference 128).
        n_frequencies: sinusoid frequencies per axis of the position encoding (reference 32).
        scale_mode: ``"mix"`` (reference: sigmoid mix of the local point and the global
            token) or ``"pyramid"`` (softmax over receptive-field sizes, see module docs).
    """

    bottleneck: int = 128
    hidden: int = 128
    n_frequencies: int = 32
    scale_mode: str = "mix"

    def __post_init__(self) -> None:
        for name in ("bottleneck", "hidden", "n_frequencies"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"FactorTopyConfig.{name} = {value!r}: must be a positive integer")
        if self.scale_mode not in SCALE_MODES:
            raise ConfigError(f"FactorTopyConfig.scale_mode = {self.scale_mode!r}: allowed values are "
                              f"{', '.join(SCALE_MODES)}")


@dataclass(frozen=True)
class Selections:
    """Per-vertex selector outputs of one subject.

    Attributes:
        layer_weights: (n_vertices, n_layers), softmax weights, rows sum to 1.
        space: (n_vertices, 2), (x, y) in (-1, 1) in ``grid_sample`` convention.
        scale: (n_vertices,) in [0, 1]; 0 = local, 1 = global.
        scale_levels: (n_vertices, n_levels) weights over pyramid levels (finest first,
            global token last) in ``"pyramid"`` mode, else None.
    """

    layer_weights: torch.Tensor
    space: torch.Tensor
    scale: torch.Tensor
    scale_levels: torch.Tensor | None = None


def pyramid_sizes(grid: int) -> tuple[int, ...]:
    """Grid sides of the sampled pyramid levels: ``grid, grid // 2, ...`` down to 2."""
    sizes = [grid]
    while sizes[-1] // 2 >= 2:
        sizes.append(sizes[-1] // 2)
    return tuple(size for size in sizes if size >= 2)


class FactorTopy(nn.Module):
    """FactorTopy over ``n_layers`` layers of local (grid x grid) and global tokens.

    Args:
        n_channels: C_l of each layer.
        grid: side of the local token grid (the method: 8).
        coords: sphere coordinates, tensor of shape (n_vertices, 3), or a sequence of them,
            one per subject, sharing selectors and bottlenecks.
        cfg: architecture.
    """

    def __init__(self, *, n_channels: Sequence[int], grid: int, coords: torch.Tensor | Sequence[torch.Tensor],
                 cfg: FactorTopyConfig) -> None:
        super().__init__()
        coord_sets = [coords] if isinstance(coords, torch.Tensor) else list(coords)
        if not n_channels or grid < 1 or not coord_sets:
            raise InvalidInputError(f"FactorTopy needs >= 1 layer, a grid >= 1 and >= 1 vertex set "
                                    f"(got {len(n_channels)} layers, grid {grid}, {len(coord_sets)} sets)")
        for index, subject_coords in enumerate(coord_sets):
            if subject_coords.ndim != 2 or subject_coords.shape[1] != 3 or len(subject_coords) == 0:
                raise InvalidInputError(f"coordinates of subject {index} have shape {tuple(subject_coords.shape)}; "
                                        "expected (n_vertices, 3) with n_vertices >= 1")
            if not torch.isfinite(subject_coords).all():
                raise InvalidInputError(f"coordinates of subject {index} contain NaN or inf")
        self.cfg = cfg
        self.grid = grid
        self.n_channels = tuple(int(c) for c in n_channels)
        width = cfg.bottleneck
        self.local_bottlenecks = nn.ModuleList(nn.Conv2d(c, width, 1, bias=False) for c in self.n_channels)
        self.global_bottlenecks = nn.ModuleList(nn.Linear(c, width, bias=False) for c in self.n_channels)
        self.levels = pyramid_sizes(grid) if cfg.scale_mode == "pyramid" else (grid,)
        n_scales = len(self.levels) + 2 if cfg.scale_mode == "pyramid" else 1
        self.selectors = Selectors(encoding_width(cfg.n_frequencies), cfg.hidden, len(self.n_channels), n_scales)
        joint = normalise_coordinates(torch.cat([c.detach().float().cpu() for c in coord_sets]))
        encodings = encode_positions(joint, n_frequencies=cfg.n_frequencies).split([len(c) for c in coord_sets])
        for index, encoding in enumerate(encodings):
            self.register_buffer(f"encoding_{index}", encoding.contiguous(), persistent=False)
        self.readouts = nn.ModuleList(nn.Linear(width, len(c)) for c in coord_sets)

    @property
    def n_layers(self) -> int:
        return len(self.n_channels)

    @property
    def n_subjects(self) -> int:
        return len(self.readouts)

    def n_vertices(self, subject: int = 0) -> int:
        """Number of vertices of ``subject``."""
        return self.readouts[subject].out_features

    def position_encoding(self, subject: int = 0) -> torch.Tensor:
        """The fixed sinusoidal encoding of one subject's vertex positions, shape (n_vertices, 192 by default):
        the input of every selector MLP."""
        if not 0 <= subject < self.n_subjects:
            raise InvalidInputError(f"subject index {subject} out of range: the model has {self.n_subjects} subject(s)")
        return getattr(self, f"encoding_{subject}")

    def selections(self, *, subject: int = 0) -> Selections:
        """Selector outputs for every vertex of ``subject`` (differentiable)."""
        space, layer, scale = self.selectors(self.position_encoding(subject))
        if self.cfg.scale_mode == "mix":
            return Selections(layer_weights=layer, space=space, scale=scale)
        position = torch.linspace(0.0, 1.0, scale.shape[1], device=scale.device, dtype=scale.dtype)
        return Selections(layer_weights=layer, space=space, scale=scale @ position, scale_levels=scale)

    def regulariser(self, *, subject: int = 0, selections: Selections | None = None) -> torch.Tensor:
        """The method's prior R: mean over vertices of ``sum_l p_l log p_l / log L`` + ``mean((s - 0.5)^2)``.

        In ``"pyramid"`` mode the scale term is the same negative normalised entropy over
        pyramid levels (it too keeps the choice soft while the prior is on). Pass the
        step's ``selections`` (as given to :meth:`forward`) to avoid evaluating the
        selector MLPs again.
        """
        chosen = self.selections(subject=subject) if selections is None else selections
        regulariser = _negative_entropy(chosen.layer_weights)
        if chosen.scale_levels is None:
            return regulariser + ((chosen.scale - 0.5) ** 2).mean()
        return regulariser + _negative_entropy(chosen.scale_levels)

    def forward(self, local: Sequence[torch.Tensor], global_: Sequence[torch.Tensor], *,
                subject: int = 0, selections: Selections | None = None) -> torch.Tensor:
        """Predicted responses.

        Args:
            local: per layer, tensor of shape (n_images, C_l, grid, grid).
            global_: per layer, tensor of shape (n_images, C_l).
            subject: which subject's vertices and read-out.
            selections: ``self.selections(subject=subject)`` when the caller already has
                them (a training step that also needs the regulariser or a smoothness
                penalty evaluates the selector MLPs, a sizeable share of a step, only once).

        Returns:
            tensor of shape (n_images, n_vertices).
        """
        self._check_inputs(local, global_)
        chosen = self.selections(subject=subject) if selections is None else selections
        readout = self.readouts[subject]
        # The 1x1 convolutions as matrix products (same arithmetic; much faster backward on CPU in bfloat16).
        tokens = torch.stack([torch.matmul(bottleneck.weight.flatten(1), x.flatten(2)).unflatten(2, x.shape[2:])
                              for bottleneck, x in zip(self.local_bottlenecks, local)])
        global_tokens = torch.stack([bottleneck(x) for bottleneck, x in zip(self.global_bottlenecks, global_)])
        weight, layer = readout.weight, chosen.layer_weights
        if chosen.scale_levels is None:
            local_part = sampled_readout(pad_tokens(tokens), self.grid, chosen.space, layer, weight)
            global_part = pointwise_readout(global_tokens, layer, weight)
            scale = chosen.scale[:, None]
            summed = (1 - scale) * local_part + scale * global_part
        else:
            parts = [sampled_readout(pad_tokens(_pool(tokens, size)), size, chosen.space, layer, weight)
                     for size in self.levels]
            parts.append(pointwise_readout(tokens.mean(dim=(3, 4)), layer, weight))
            parts.append(pointwise_readout(global_tokens, layer, weight))
            summed = (chosen.scale_levels[:, :, None] * torch.stack(parts, dim=1)).sum(dim=1)
        return (summed / self.cfg.bottleneck + readout.bias[:, None]).T

    def selector_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the three selector MLPs (for their own learning rate)."""
        return self.selectors.parameters()

    def readout_parameters(self) -> Iterator[nn.Parameter]:
        """Every other parameter: bottlenecks and per-subject read-outs."""
        selector_ids = {id(p) for p in self.selectors.parameters()}
        return (p for p in self.parameters() if id(p) not in selector_ids)

    def _check_inputs(self, local: Sequence[torch.Tensor], global_: Sequence[torch.Tensor]) -> None:
        if len(local) != self.n_layers or len(global_) != self.n_layers:
            raise InvalidInputError(f"FactorTopy was built for {self.n_layers} layers; got {len(local)} local and "
                                    f"{len(global_)} global tensors")
        for index, (x, g, channels) in enumerate(zip(local, global_, self.n_channels)):
            if tuple(x.shape[1:]) != (channels, self.grid, self.grid) or tuple(g.shape[1:]) != (channels,):
                raise InvalidInputError(f"layer {index}: local {tuple(x.shape)} / global {tuple(g.shape)}; expected "
                                        f"(n_images, {channels}, {self.grid}, {self.grid}) / (n_images, {channels})")


def _pool(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool (n_layers, n_images, D, g, g) tokens to a size x size grid."""
    if size == tokens.shape[-1]:
        return tokens
    n_layers, n_images = tokens.shape[:2]
    pooled = F.adaptive_avg_pool2d(tokens.flatten(0, 1), size)
    return pooled.view(n_layers, n_images, *pooled.shape[1:])


def _negative_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``sum p log p / log K`` (-1 uniform .. 0 one-hot); 0 when K = 1."""
    if weights.shape[1] < 2:
        return weights.new_zeros(())
    return (weights * torch.log(weights.clamp_min(1e-12))).sum(dim=1).mean() / math.log(weights.shape[1])
