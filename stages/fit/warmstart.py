"""Warm start of the selectors from cheap regressions (an option beyond the paper).

The reference starts every vertex at uniform layer weights and the image centre and, on
small data or short budgets, its selectors barely move (method.md). Two cheap
regressions on the training images give a better start:

* layer: a ridge per layer scores every layer for every vertex (it recovers the planted
  hierarchy well); the scores, softened by a temperature, are the layer target;
* space: for each vertex's best layer, a tiny ridge per grid cell (channels reduced by a
  random projection) scores every cell; the softmax-weighted centroid of the cells is the target point.

The selector MLPs are fitted to these targets, so the start is already smooth over the
cortex; training then refines them jointly with the read-out. In a joint fit of several
subjects each subject's targets come from its own responses and the shared selectors are
fitted to all of them at once, which averages them where the subjects' vertices coincide.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from cache.errors import InvalidInputError
from cache.store import FeatureStore
from stages.fit.factortopy import FactorTopy
from stages.fit.config import FitConfig
from stages.fit.ridge import score_layers, score_targets
from stages.subject import Subject

#: Vertices scored at once by :func:`cell_scores`: bounds its memory to ~(cells x components x block) floats.
VERTEX_BLOCK = 4096
#: Random-projection width of each layer's channels in :func:`cell_scores`.
CELL_COMPONENTS = 32
#: Optimiser steps used to fit the layer selector to its target.
WARM_START_STEPS = 300
WARM_START_LR = 3e-3


def fit_selectors(model: FactorTopy, *, layer_targets: Sequence[np.ndarray] | None = None,
                  space_targets: Sequence[np.ndarray] | None = None, steps: int = WARM_START_STEPS,
                  lr: float = WARM_START_LR) -> dict[str, float]:
    """Fit the layer and/or space selector to per-vertex targets; returns the final losses.

    The layer selector minimises the cross-entropy to ``layer_targets``; the space selector
    the squared error to ``space_targets``, over every subject's vertices at once. The
    selectors are shared, so where subjects' vertices coincide they settle on the mean of
    the subjects' targets (the minimiser of both losses). The scale selector is left at its start.

    Args:
        model: the FactorTopy model.
        layer_targets: one array of shape (n_vertices_s, n_layers) per subject of the model,
            rows summing to 1, or None.
        space_targets: one array of shape (n_vertices_s, 2) in (-1, 1) per subject, or None.

    Raises:
        InvalidInputError: not one target array per subject, or one with the wrong number of rows.
    """
    device = next(model.parameters()).device
    encoding = torch.cat([model.position_encoding(index) for index in range(model.n_subjects)])
    heads = {}
    for name, head, targets in (("layer", model.selectors.layer, layer_targets),
                                ("space", model.selectors.space, space_targets)):
        if targets is not None:
            heads[name] = (head, torch.as_tensor(_stacked(model, targets, name), dtype=torch.float32, device=device))
    if not heads:
        return {}
    optimiser = torch.optim.Adam([p for head, _ in heads.values() for p in head.parameters()], lr=lr)
    losses: dict[str, torch.Tensor] = {}
    for _ in range(steps):
        if "layer" in heads:
            head, wanted = heads["layer"]
            losses["layer"] = -(wanted * torch.log_softmax(head(encoding), dim=-1)).sum(dim=1).mean()
        if "space" in heads:
            head, wanted = heads["space"]
            losses["space"] = ((torch.tanh(head(encoding)) - wanted) ** 2).sum(dim=1).mean()
        optimiser.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimiser.step()
    return {name: float(loss.detach()) for name, loss in losses.items()}


def _stacked(model: FactorTopy, targets: Sequence[np.ndarray], name: str) -> np.ndarray:
    """Per-subject targets stacked in the model's vertex order, checked against its subjects."""
    if isinstance(targets, np.ndarray) or len(targets) != model.n_subjects:
        given = "one array" if isinstance(targets, np.ndarray) else f"{len(targets)} arrays"
        raise InvalidInputError(f"{name} targets: expected a list of {model.n_subjects} array(s), one per subject "
                                f"of the model, got {given}")
    for index, array in enumerate(targets):
        if len(array) != model.n_vertices(index):
            raise InvalidInputError(f"{name} targets of subject {index} have {len(array)} rows; the model has "
                                    f"{model.n_vertices(index)} vertices for it")
    return np.concatenate(targets)


def cell_scores(store: FeatureStore, subject: Subject, *, layer_indices: Sequence[int], best_layer: np.ndarray,
                grid: int, n_components: int = CELL_COMPONENTS, alpha: float = 1.0, seed: int = 0,
                batch_size: int = 256) -> np.ndarray:
    """In-sample R^2 of a small ridge on each grid cell's tokens of each vertex's best layer.

    Each layer's channels are reduced to ``n_components`` by a seeded Gaussian random
    projection, so every (vertex, cell) regression is tiny; the fit's bias from
    in-sample scoring is the same for every cell, so the best cells stand out alike.

    Args:
        store: the feature store.
        subject: the subject (training rows only are used).
        layer_indices: store indices of the fit's layers.
        best_layer: int array of shape (n_vertices,), index into ``layer_indices`` per vertex.
        grid: the stored grid to read.

    Returns:
        float32 array of shape (n_vertices, grid * grid), cells row-major (y then x).
    """
    train = subject.splits["train"]
    ids = subject.stimulus_ids[train]
    needed = sorted(set(int(b) for b in best_layer))
    rng = np.random.default_rng(seed)
    projections = {slot: rng.standard_normal((store.n_channels[layer_indices[slot]], n_components)).astype(np.float32)
                   for slot in needed}
    reduced = {slot: np.zeros((len(ids), grid * grid, n_components), np.float32) for slot in needed}
    for batch in store.iter_batches(ids, batch_size=batch_size, grid=grid):
        for slot in needed:
            tokens = np.asarray(batch.local[layer_indices[slot]], dtype=np.float32)   # (n, C, g, g)
            flat = tokens.reshape(len(tokens), tokens.shape[1], grid * grid).transpose(0, 2, 1)
            reduced[slot][batch.positions] = flat @ projections[slot]
    responses = np.asarray(subject.responses[train], dtype=np.float64)
    responses = responses - responses.mean(axis=0)
    total = np.maximum((responses ** 2).sum(axis=0), 1e-12)
    scores = np.zeros((subject.n_vertices, grid * grid), np.float32)
    for slot in needed:
        x = torch.as_tensor(reduced[slot], dtype=torch.float64).transpose(0, 1)          # (cells, n, k)
        x = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True).clamp_min(1e-12)
        moments = x.transpose(1, 2) @ x                                                     # (cells, k, k)
        gram = moments + alpha * len(ids) * torch.eye(n_components, dtype=torch.float64)
        members = np.flatnonzero(best_layer == slot)
        for vertices in np.array_split(members, -(-len(members) // VERTEX_BLOCK)):
            y = torch.as_tensor(responses[:, vertices])                                     # (n, v)
            cross = x.transpose(1, 2) @ y                                                   # (cells, k, v)
            weights = torch.linalg.solve(gram, cross)
            # |y - x w|^2 = y'y - 2 w'x'y + w'(x'x)w: no (cells, n, v) prediction is ever built
            residual = ((y ** 2).sum(dim=0) - 2.0 * (weights * cross).sum(dim=1)
                        + (weights * (moments @ weights)).sum(dim=1))                       # (cells, v)
            scores[vertices] = (1.0 - residual.numpy() / total[vertices]).T
    return scores


def centre_targets(scores: np.ndarray, grid: int, *, temperature: float = 0.03) -> np.ndarray:
    """Receptive-field centres from per-cell scores: the centroid of cells weighted by ``softmax(score / temperature)``.

    On the synthetic subject (mobilenet_v2, 1,026 training images) 0.03 R^2 units gave the
    smallest centre error (median 0.54 cells with the true layer; argmax alone 1.13).

    Args:
        scores: array of shape (n_vertices, grid * grid), cells row-major (y then x).

    Returns:
        float32 array of shape (n_vertices, 2): (x, y) in (-1, 1), ``grid_sample`` convention.
    """
    logits = (scores - scores.max(axis=1, keepdims=True)) / temperature
    weights = np.exp(logits)
    weights = (weights / weights.sum(axis=1, keepdims=True)).reshape(-1, grid, grid)
    centres = (2.0 * np.arange(grid) + 1.0) / grid - 1.0
    return np.stack([weights.sum(axis=1) @ centres, weights.sum(axis=2) @ centres], axis=1).astype(np.float32)


def warm_start(model: FactorTopy, stores: Sequence[FeatureStore], subjects: Sequence[Subject], cfg: FitConfig, *,
               layer_indices: Sequence[int], device: torch.device) -> dict[str, float]:
    """Initialise the (shared) selectors from cheap regressions on each subject's training images; returns a summary.

    ``cfg.warm_start="layer"``: the layer selector from per-layer ridge scores (``score_layers``,
    run on the fit's ``device``); ``"layer+space"``: also the space selector from per-cell
    scores of each vertex's best layer (``cell_scores`` -> ``centre_targets``). ``"none"``
    does nothing. Each subject's targets come from its own responses (``stores[i]`` holds
    ``subjects[i]``'s images); :func:`fit_selectors` fits the shared selectors to all of them at once.

    Args:
        layer_indices: store indices of the fit's layers (resolved once by the input checks).
        device: the fit's resolved device.
    """
    if cfg.warm_start == "none":
        return {}
    started = time.perf_counter()
    layer_targets, space_targets = [], []
    for store, subject in zip(stores, subjects):
        scores = score_layers(store, subject, layer_indices=layer_indices, grid=cfg.grid, device=device)
        layer_targets.append(score_targets(scores, temperature=cfg.warm_start_temperature))
        if cfg.warm_start == "layer+space":
            best = np.nan_to_num(scores, nan=-np.inf).argmax(axis=1)
            space_targets.append(centre_targets(cell_scores(store, subject, layer_indices=layer_indices,
                                                            best_layer=best, grid=cfg.grid, seed=cfg.seed), cfg.grid))
    losses = fit_selectors(model, layer_targets=layer_targets, space_targets=space_targets or None)
    return {"warm_start_seconds": time.perf_counter() - started, **{f"warm_start_{k}_loss": v for k, v in losses.items()}}
