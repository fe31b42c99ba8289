"""A plain FactorTopy written straight from the equations of docs/method.md.

Deliberately direct: one ``grid_sample`` per layer, one (n_images, n_vertices, D) tensor per
layer, weighted and summed, then the mean read-out. It is the oracle the efficient model is
tested against and the baseline of ``bench/fit.py``. It shares nothing with
``stages.fit`` except parameter values, which :func:`plain_copy_of` transfers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def plain_encoding(coords: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """Shift to min 0, isotropic scale so the longest axis spans 0..100, then sin/cos per axis and frequency."""
    p = coords.double() - coords.double().min(dim=0).values
    p = p * (100.0 / p.max())
    features = []
    for axis in range(3):
        omegas = [1000.0 ** (-k / n_frequencies) for k in range(n_frequencies)]
        features += [torch.sin(omega * p[:, axis]) for omega in omegas]
        features += [torch.cos(omega * p[:, axis]) for omega in omegas]
    return torch.stack(features, dim=1).float()


def plain_mlp(n_outputs: int, n_features: int, hidden: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                        nn.Linear(hidden, n_outputs, bias=False))
    nn.init.zeros_(mlp[4].weight)
    return mlp


class PlainFactorTopy(nn.Module):
    """FactorTopy as written in the method, with ``scale_mode`` "mix" or "pyramid"."""

    def __init__(self, n_channels: list[int], grid: int, coords: torch.Tensor, *, bottleneck: int = 128,
                 hidden: int = 128, n_frequencies: int = 32, scale_mode: str = "mix") -> None:
        super().__init__()
        self.grid, self.bottleneck, self.scale_mode = grid, bottleneck, scale_mode
        self.local_convs = nn.ModuleList(nn.Conv2d(c, bottleneck, 1, bias=False) for c in n_channels)
        self.global_linears = nn.ModuleList(nn.Linear(c, bottleneck, bias=False) for c in n_channels)
        self.register_buffer("pe", plain_encoding(coords, n_frequencies))
        n_features = 6 * n_frequencies
        self.pyramid = [grid]
        while self.pyramid[-1] // 2 >= 2:
            self.pyramid.append(self.pyramid[-1] // 2)
        n_scales = 1 if scale_mode == "mix" else len(self.pyramid) + 2
        self.space_mlp = plain_mlp(2, n_features, hidden)
        self.layer_mlp = plain_mlp(len(n_channels), n_features, hidden)
        self.scale_mlp = plain_mlp(n_scales, n_features, hidden)
        readout = nn.Linear(bottleneck, len(coords))
        self.W = nn.Parameter(readout.weight.detach().clone())
        self.bias = nn.Parameter(readout.bias.detach().clone())

    def forward(self, local: list[torch.Tensor], global_: list[torch.Tensor]) -> torch.Tensor:
        space = torch.tanh(self.space_mlp(self.pe))                      # (N, 2)
        w = torch.softmax(self.layer_mlp(self.pe), dim=-1)               # (N, L)
        n_images, n_vertices = local[0].shape[0], len(space)
        sample_grid = space.view(1, n_vertices, 1, 2).expand(n_images, n_vertices, 1, 2)
        if self.scale_mode == "mix":
            s = torch.sigmoid(self.scale_mlp(self.pe))[:, 0]             # (N,)
            v_local = 0
            v_global = 0
            for l in range(len(local)):
                local_l = self.local_convs[l](local[l])                  # (B, D, g, g)
                sampled = F.grid_sample(local_l, sample_grid, mode="bilinear", padding_mode="zeros",
                                        align_corners=False)[..., 0].permute(0, 2, 1)  # (B, N, D)
                v_local = v_local + w[None, :, l, None] * sampled
                global_l = self.global_linears[l](global_[l])            # (B, D)
                v_global = v_global + w[None, :, l, None] * global_l[:, None, :]
            v = (1 - s[None, :, None]) * v_local + s[None, :, None] * v_global
        else:
            levels = torch.softmax(self.scale_mlp(self.pe), dim=-1)      # (N, K)
            v = 0
            for l in range(len(local)):
                local_l = self.local_convs[l](local[l])
                per_level = []
                for size in self.pyramid:
                    pooled = F.adaptive_avg_pool2d(local_l, size)
                    per_level.append(F.grid_sample(pooled, sample_grid, mode="bilinear", padding_mode="zeros",
                                                   align_corners=False)[..., 0].permute(0, 2, 1))
                per_level.append(local_l.mean(dim=(2, 3))[:, None, :].expand(-1, n_vertices, -1))
                per_level.append(self.global_linears[l](global_[l])[:, None, :].expand(-1, n_vertices, -1))
                mixed = sum(levels[None, :, k, None] * x for k, x in enumerate(per_level))
                v = v + w[None, :, l, None] * mixed
        return (v * self.W[None]).mean(dim=-1) + self.bias[None]


def plain_copy_of(model: nn.Module, coords: torch.Tensor) -> PlainFactorTopy:
    """A :class:`PlainFactorTopy` holding the parameter values of a ``stages.fit.factortopy.FactorTopy``.

    ``coords`` are the plain model's vertices (for a several-subject model: all subjects'
    coordinates concatenated, so the encoding is normalised jointly); the read-out rows are
    the concatenated per-subject read-outs.
    """
    cfg = model.cfg
    plain = PlainFactorTopy(list(model.n_channels), model.grid, coords, bottleneck=cfg.bottleneck,
                            hidden=cfg.hidden, n_frequencies=cfg.n_frequencies, scale_mode=cfg.scale_mode)
    with torch.no_grad():
        for l in range(model.n_layers):
            plain.local_convs[l].weight.copy_(model.local_bottlenecks[l].weight)
            plain.global_linears[l].weight.copy_(model.global_bottlenecks[l].weight)
        for name in ("space", "layer", "scale"):
            source = getattr(model.selectors, name)
            target = getattr(plain, f"{name}_mlp")
            for index, layer in ((0, source.body[0]), (2, source.body[2]), (4, source.head)):
                target[index].weight.copy_(layer.weight)
                if layer.bias is not None:
                    target[index].bias.copy_(layer.bias)
        plain.W.copy_(torch.cat([r.weight for r in model.readouts]))
        plain.bias.copy_(torch.cat([r.bias for r in model.readouts]))
    return plain


def plain_gradients_of(model: nn.Module, plain: PlainFactorTopy) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pairs (model grad, plain grad) for every parameter of the model, keyed by the model's name.

    Read-out gradients of a several-subject model are concatenated over subjects.
    """
    pairs = {}
    for l in range(model.n_layers):
        pairs[f"local_bottlenecks.{l}"] = (model.local_bottlenecks[l].weight.grad, plain.local_convs[l].weight.grad)
        pairs[f"global_bottlenecks.{l}"] = (model.global_bottlenecks[l].weight.grad,
                                            plain.global_linears[l].weight.grad)
    for name in ("space", "layer", "scale"):
        source = getattr(model.selectors, name)
        target = getattr(plain, f"{name}_mlp")
        for index, layer in ((0, source.body[0]), (2, source.body[2]), (4, source.head)):
            pairs[f"selectors.{name}.{index}.weight"] = (layer.weight.grad, target[index].weight.grad)
            if layer.bias is not None:
                pairs[f"selectors.{name}.{index}.bias"] = (layer.bias.grad, target[index].bias.grad)

    def stacked(grads: list[torch.Tensor | None], like: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)])

    weights = [r.weight for r in model.readouts]
    biases = [r.bias for r in model.readouts]
    pairs["readout.weight"] = (stacked([w.grad for w in weights], weights), plain.W.grad)
    pairs["readout.bias"] = (stacked([b.grad for b in biases], biases), plain.bias.grad)
    return pairs


def plain_negative_entropy(p: torch.Tensor) -> torch.Tensor:
    return (p * torch.log(p)).sum(dim=1).mean() / math.log(p.shape[1])
