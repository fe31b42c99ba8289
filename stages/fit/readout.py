"""Per-vertex read-out of layer tokens without materialising a (n_images, n_vertices, D) tensor per layer.

FactorTopy predicts ``y[b, n] = mean_d(v[b, n, d] * W[n, d])`` where ``v`` mixes, over layers,
the bottlenecked tokens bilinearly sampled at one point per vertex. Everything is linear in
the tokens, so the read-out ``W`` can be contracted first: for each vertex only the 4 grid
corners around its point (shared by all layers) and the n_layers layers matter, i.e.
``n_layers * 4`` token rows. Vertices whose point lies in the same grid cell share those
rows, so grouping vertices by cell turns the whole local path into one small dense product
per occupied cell (at most ``(grid + 1) ** 2`` of them), costing
``n_vertices * n_layers * 4 * n_images * D`` multiply-adds in total instead of the
``n_layers`` full-size sampling, weighting and add passes over ``(n_images, n_vertices, D)``
of the direct formulation. Bilinear weights are written out explicitly so their gradient
reaches the space selector exactly as ``grid_sample``'s does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def bilinear_corners(space: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Corner cell and bilinear weights of each point on a ``grid x grid`` token grid.

    Follows ``grid_sample(mode="bilinear", align_corners=False, padding_mode="zeros")``:
    pixel coordinate ``i = ((x + 1) * grid - 1) / 2``; corners outside the grid are served
    by a one-cell zero border (see :func:`pad_tokens`), so their weight multiplies zeros.

    Args:
        space: tensor of shape (n_vertices, 2), (x, y) in [-1, 1].
        grid: side of the token grid.

    Returns:
        cell: int32 tensor of shape (n_vertices,) (int32 because sorting it is far faster
            than int64 on CPU), index of the top-left corner in the
            padded ``(grid + 1) x (grid + 1)`` cell lattice (``y0 * (grid + 1) + x0``, both
            shifted by one for the border); no gradient.
        weights: tensor of shape (n_vertices, 4), bilinear weights of the corners
            (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1); differentiable in ``space``.
    """
    pixel = ((space + 1.0) * grid - 1.0) / 2.0
    corner = pixel.detach().floor()
    frac = pixel - corner
    fx, fy = frac[:, 0], frac[:, 1]
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    padded = (corner + 1).clamp(0, grid).to(torch.int32)
    cell = padded[:, 1] * (grid + 1) + padded[:, 0]
    return cell, weights


def pad_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Bottlenecked local tokens laid out for corner gathering.

    Args:
        tokens: tensor of shape (n_layers, n_images, D, grid, grid).

    Returns:
        tensor of shape (n_layers, (grid + 2) ** 2, n_images, D): a zero border of one
        cell around the grid, positions flattened row-major (y then x).
    """
    n_layers, n_images, width, grid, _ = tokens.shape
    padded = F.pad(tokens, (1, 1, 1, 1))
    return padded.permute(0, 3, 4, 1, 2).reshape(n_layers, (grid + 2) ** 2, n_images, width)


def sampled_readout(padded: torch.Tensor, grid: int, space: torch.Tensor, layer_weights: torch.Tensor,
                    readout: torch.Tensor) -> torch.Tensor:
    """``sum_d W[n, d] * sum_l w[n, l] * bilinear_sample(tokens_l, space[n])[b, d]`` for every (n, b).

    Args:
        padded: tokens from :func:`pad_tokens`, shape (n_layers, (grid + 2) ** 2, n_images, D).
        grid: side of the unpadded grid.
        space: (n_vertices, 2) sample points in [-1, 1].
        layer_weights: (n_vertices, n_layers).
        readout: (n_vertices, D), the per-vertex read-out W.

    Returns:
        tensor of shape (n_vertices, n_images): the read-out summed (not averaged) over D.
    """
    n_layers, n_positions, n_images, width = padded.shape
    cell, corner_weights = bilinear_corners(space, grid)
    mixing = (layer_weights[:, :, None] * corner_weights[:, None, :]).reshape(len(space), 1, n_layers * 4)
    order = torch.argsort(cell)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    cells, counts = torch.unique_consecutive(cell[order], return_counts=True)
    sizes = counts.tolist()
    side = grid + 2
    top_left = (cells.long() // (grid + 1)) * side + cells.long() % (grid + 1)
    corners = (top_left[:, None] + torch.tensor([0, 1, side, side + 1], device=cell.device)).reshape(-1)
    # Each occupied cell's token rows, gathered once by a one-hot product: its backward is one more product,
    # where indexing's would be a scatter-add into the grid.
    select = torch.zeros(len(corners), n_positions, dtype=padded.dtype, device=padded.device)
    select[torch.arange(len(corners), device=cell.device), corners] = 1.0
    rows = torch.matmul(select, padded.reshape(n_layers, n_positions, n_images * width))
    rows = rows.view(n_layers, len(cells), 4, n_images, width).transpose(0, 1)
    rows = rows.reshape(len(cells), n_layers * 4 * n_images, width)       # (n_cells, n_layers * 4 * n_images, D)
    readouts = permute_rows(readout, order, inverse).split(sizes)
    parts = []
    for group_rows, group_readout, group_mixing in zip(rows.unbind(0), readouts,
                                                       permute_rows(mixing, order, inverse).split(sizes)):
        contracted = (group_readout @ group_rows.T).view(-1, n_layers * 4, n_images)
        parts.append(torch.bmm(group_mixing, contracted)[:, 0])
    return permute_rows(torch.cat(parts), inverse, order)


class _PermutedRows(torch.autograd.Function):
    """``x[order]`` for a permutation ``order``, whose gradient is gathered back by the inverse permutation
    instead of scattered (and summed) as indexing's is."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, order)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def permute_rows(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` in the order of the permutation ``order`` (``inverse`` its inverse), differentiable."""
    return _PermutedRows.apply(x, order, inverse)


def pointwise_readout(tokens: torch.Tensor, layer_weights: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """``sum_d W[n, d] * sum_l w[n, l] * tokens[l, b, d]`` for every (n, b): the global-token path.

    Args:
        tokens: (n_layers, n_images, D), one vector per layer and image.
        layer_weights: (n_vertices, n_layers).
        readout: (n_vertices, D).

    Returns:
        tensor of shape (n_vertices, n_images), summed (not averaged) over D.
    """
    n_layers, n_images, width = tokens.shape
    contracted = (readout @ tokens.reshape(n_layers * n_images, width).T).view(-1, n_layers, n_images)
    return torch.bmm(layer_weights[:, None, :], contracted)[:, 0]
