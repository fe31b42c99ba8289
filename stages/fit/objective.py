"""The FactorTopy training objective: regression loss, the fading selector prior, and a smoothness penalty.

``loss = regression_loss(pred, target) + prior_weight(step) * model.regulariser()`` is the
method's objective; ``smoothness_penalty`` is an option beyond the paper (an explicit
"topological constraint" over mesh neighbours).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cache.errors import InvalidInputError
from stages.fit.factortopy import Selections


def regression_loss(pred: torch.Tensor, target: torch.Tensor, *, beta: float = 0.1) -> torch.Tensor:
    """Smooth-L1 (Huber-like) loss, mean over images and vertices.

    Args:
        pred, target: tensors of shape (n_images, n_vertices); targets z-scored per vertex.
        beta: where the loss switches from quadratic to linear (the method: 0.1).
    """
    return F.smooth_l1_loss(pred.float(), target.float(), beta=beta)


def prior_weight(step: int, *, weight: float = 0.1, fade_steps: int = 2000) -> float:
    """Weight of the selector prior at optimisation ``step``: ``weight * max(1 - step / fade_steps, 0)``.

    ``fade_steps <= 0`` switches the prior off.
    """
    if fade_steps <= 0:
        return 0.0
    return weight * max(1.0 - step / fade_steps, 0.0)


def smoothness_penalty(selections: Selections, edges: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of selector outputs across mesh edges.

    Sums, per edge, the squared differences of the layer weights, of the space point
    (halved, since it spans [-1, 1] where the others span [0, 1]) and of the scale (the
    pyramid level weights in ``"pyramid"`` mode), then averages over edges.

    Args:
        selections: selector outputs of one subject (n_vertices rows).
        edges: int64 tensor of shape (n_edges, 2) of vertex index pairs.

    Returns:
        scalar tensor (0 when there are no edges).
    """
    n_vertices = selections.layer_weights.shape[0]
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise InvalidInputError(f"edges have shape {tuple(edges.shape)}; expected (n_edges, 2) vertex index pairs")
    if len(edges) == 0:
        return selections.layer_weights.new_zeros(())
    if int(edges.min()) < 0 or int(edges.max()) >= n_vertices:
        raise InvalidInputError(f"edges index vertices {int(edges.min())}..{int(edges.max())}; the selections "
                                f"have {n_vertices} vertices (indices 0..{n_vertices - 1})")
    scale = selections.scale[:, None] if selections.scale_levels is None else selections.scale_levels
    outputs = torch.cat([selections.layer_weights, selections.space / 2, scale], dim=1)
    first, second = edges[:, 0].long(), edges[:, 1].long()
    return ((outputs[first] - outputs[second]) ** 2).sum(dim=1).mean()
