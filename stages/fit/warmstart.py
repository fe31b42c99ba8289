"""Warm start of the selectors from cheap regressions (an option beyond the paper).

The reference starts every vertex at uniform layer weights and the image centre and, on
small data or short budgets, its selectors barely move (method.md). Two cheap
regressions on the training images give a better start:

* layer: a ridge per layer scores every layer for every vertex by generalised
  cross-validation from streamed sufficient statistics (``stages.fit.layer_scores``; it
  recovers the planted hierarchy well); the scores, softened by a temperature, are the layer target;
* space: for each vertex's best layer, a tiny ridge per grid cell (channels reduced by a
  random projection) scores every cell; the softmax-weighted centroid of the cells is the target point.

The selector MLPs are fitted to these targets, so the start is already smooth over the
cortex; training then refines them jointly with the read-out. In a joint fit of several
subjects each subject's targets come from its own responses and the shared selectors are
fitted to all of them at once, which averages them where the subjects' vertices coincide.
"""

from __future__ import annotations

import time
from typing import Iterator, Sequence

import numpy as np
import torch

from cache.errors import InvalidInputError
from cache.store import FeatureStore
from stages.fit.factortopy import FactorTopy
from stages.fit.config import FitConfig
from stages.fit.layer_confidence import LayerBootstrap, LayerSets, noise_floor
from stages.fit.layer_scores import score_layers
from stages.fit.layer_statistics import ResponseMoments
from stages.fit.pooled_features import HeldTokens, ProjectedCells
from stages.fit.ridge import RidgeConfig, score_targets
from stages.resources import release_free_memory
from stages.subject import Subject

#: Vertices scored at once by :func:`cell_scores`: bounds its memory to ~(cells x components x block) floats.
VERTEX_BLOCK = 4096
#: Random-projection width of each layer's channels in :func:`cell_scores`.
CELL_COMPONENTS = 32
#: Optimiser steps used to fit the layer selector to its target.
WARM_START_STEPS = 300
WARM_START_LR = 3e-3
#: Solver settings of the per-layer scores: the ridge baseline's alpha grid, feature sets and pooling.
SCORE_SETTINGS = RidgeConfig()


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


def cell_projections(store: FeatureStore, layer_indices: Sequence[int], *, n_components: int = CELL_COMPONENTS,
                     seed: int = 0, device: torch.device = torch.device("cpu")) -> list[torch.Tensor]:
    """Per layer slot, the seeded Gaussian projection (n_channels_l, n_components) of :func:`cell_scores`,
    drawn in slot order."""
    rng = np.random.default_rng(seed)
    return [torch.as_tensor(rng.standard_normal((store.n_channels[index], n_components)), dtype=torch.float32,
                            device=device) for index in layer_indices]


def cell_scores(store: FeatureStore, subject: Subject, *, layer_indices: Sequence[int], best_layer: np.ndarray,
                grid: int, n_components: int = CELL_COMPONENTS, alpha: float = 1.0, seed: int = 0,
                batch_size: int = 256, device: torch.device = torch.device("cpu"),
                tokens: HeldTokens | None = None, cells: ProjectedCells | None = None) -> np.ndarray:
    """In-sample R^2 of a small ridge on each grid cell's tokens of each vertex's best layer.

    Each layer's channels are reduced to ``n_components`` by a seeded Gaussian random
    projection, so every (vertex, cell) regression is tiny; the fit's bias from
    in-sample scoring is the same for every cell, so the best cells stand out alike.
    One streamed pass over the training images accumulates, per layer and cell, the
    projected tokens' sums and ``x^T x`` and, for the vertices whose best layer it is,
    ``x^T y``; memory grows with cells x components x vertices, never with images.

    Args:
        store: the feature store.
        subject: the subject (training rows only are used).
        layer_indices: store indices of the fit's layers.
        best_layer: int array of shape (n_vertices,), index into ``layer_indices`` per vertex.
        grid: the stored grid to read.
        device: where the statistics are accumulated and solved.
        tokens: the training images' features of the fit's layers, already held by the fit: then the
            store is not read (batches are cut from them in the store's order).
        cells: the training images' projected cells, filled by the layer scores' store pass (the projections of
            :func:`cell_projections` with this ``seed`` and ``n_components``): then the store is not read either.

    Returns:
        float32 array of shape (n_vertices, grid * grid), cells row-major (y then x).
    """
    train = np.asarray(subject.splits["train"])
    needed = sorted(set(int(b) for b in best_layer))
    members = {slot: np.flatnonzero(best_layer == slot) for slot in needed}
    moments = ResponseMoments.of(subject.responses, train)
    statistics = {slot: _CellStatistics(grid * grid, n_components, len(members[slot]), device) for slot in needed}
    for positions, projected in _projected_batches(store, subject, layer_indices=layer_indices, slots=needed,
                                                   grid=grid, n_components=n_components, seed=seed,
                                                   batch_size=batch_size, device=device, tokens=tokens, cells=cells):
        targets = moments.centred(subject.responses, train[positions], device)
        for slot, values in zip(needed, projected):
            statistics[slot].add(values, targets[:, torch.as_tensor(members[slot], device=device)])
    scores = np.zeros((subject.n_vertices, grid * grid), np.float32)
    for slot in needed:
        scores[members[slot]] = statistics[slot].scores(moments.sum_squares[members[slot]], alpha)
    return scores


def _projected_batches(store: FeatureStore, subject: Subject, *, layer_indices: Sequence[int], slots: list[int],
                       grid: int, n_components: int, seed: int, batch_size: int, device: torch.device,
                       tokens: HeldTokens | None, cells: ProjectedCells | None
                       ) -> Iterator[tuple[np.ndarray, list[torch.Tensor]]]:
    """The training images' projected cells of the layers ``slots``, per batch in the store's order: (positions,
    per slot float32 (n, cells, n_components)), from ``cells`` when filled, else projected from ``tokens`` or a
    store pass."""
    if cells is not None and cells.values is not None:
        yield from cells.batches(slots)
        return
    projections = cell_projections(store, layer_indices, n_components=n_components, seed=seed, device=device)
    ids = list(subject.stimulus_ids[np.asarray(subject.splits["train"])])
    if tokens is None:
        batches = ((batch.positions, batch.local) for batch in store.iter_batches(
            ids, batch_size=batch_size, grid=grid, layers=[layer_indices[slot] for slot in slots]))
    else:
        batches = ((positions, [tokens.local[slot][torch.as_tensor(positions, device=tokens.local[slot].device)]
                                for slot in slots]) for positions in store.batch_order(ids, batch_size=batch_size))
    for positions, local in batches:
        yield positions, [ProjectedCells.project(torch.as_tensor(values, device=device), projections[slot])
                          for slot, values in zip(slots, local)]


class _CellStatistics:
    """Per grid cell, sums and ``x^T x`` of the projected tokens and ``x^T y`` for some vertices (float64 / float32)."""

    def __init__(self, n_cells: int, n_components: int, n_vertices: int, device: torch.device) -> None:
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.sums = torch.zeros(n_cells, n_components, dtype=torch.float64, device=device)
        self.gram = torch.zeros(n_cells, n_components, n_components, dtype=torch.float64, device=device)
        self.cross = torch.zeros(n_cells, n_components, n_vertices, dtype=torch.float32, device=device)

    def add(self, cells: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``cells`` (n, n_cells, k) projected tokens, ``targets`` (n, n_vertices) centred responses."""
        if self.shift is None:
            self.shift = cells.mean(dim=0)
        shifted = (cells - self.shift).transpose(0, 1)                                        # (cells, n, k)
        self.n += shifted.shape[1]
        self.sums += shifted.sum(dim=1, dtype=torch.float64)
        wide = shifted.double()
        self.gram += wide.transpose(1, 2) @ wide
        self.cross += shifted.transpose(1, 2) @ targets

    def scores(self, sum_squares: np.ndarray, alpha: float) -> np.ndarray:
        """``1 - |y - x w|^2 / |y|^2`` per (vertex, cell) with z-scored ``x`` and ``w`` the ridge solution."""
        mean = self.sums / self.n
        moments = self.gram - self.n * mean[:, :, None] * mean[:, None, :]                    # centred x^T x
        std = (moments.diagonal(dim1=1, dim2=2) / max(self.n - 1, 1)).clamp_min(1e-24).sqrt()  # (cells, k)
        moments = moments / std[:, :, None] / std[:, None, :]
        n_components = moments.shape[1]
        gram = moments + alpha * self.n * torch.eye(n_components, dtype=torch.float64, device=moments.device)
        total = torch.as_tensor(np.maximum(sum_squares, 1e-12), device=moments.device)
        out = np.zeros((len(sum_squares), moments.shape[0]), np.float32)
        for vertices in np.array_split(np.arange(len(sum_squares)), max(1, -(-len(sum_squares) // VERTEX_BLOCK))):
            index = torch.as_tensor(vertices, device=moments.device)
            cross = self.cross[:, :, index].double() / std[:, :, None]                        # (cells, k, v)
            weights = torch.linalg.solve(gram, cross)
            # |y - x w|^2 = y'y - 2 w'x'y + w'(x'x)w: no (cells, n, v) prediction is ever built
            residual = (total[index] - 2.0 * (weights * cross).sum(dim=1)
                        + (weights * (moments @ weights)).sum(dim=1))                         # (cells, v)
            out[vertices] = (1.0 - residual / total[index]).T.cpu().numpy()
        return out


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
               layer_indices: Sequence[int], device: torch.device,
               layer_sets: list[LayerSets] | None = None,
               tokens: Sequence[HeldTokens | None] | None = None) -> dict[str, float]:
    """Initialise the (shared) selectors from cheap regressions on each subject's training images; returns a summary.

    ``cfg.warm_start="layer"``: the layer selector from per-layer ridge scores
    (:func:`~stages.fit.layer_scores.score_layers`, on the fit's ``device``);
    ``"layer+space"``: also the space selector from per-cell scores of each vertex's best
    layer (``cell_scores`` -> ``centre_targets``). ``"none"`` does nothing. Each subject's
    targets come from its own responses (``stores[i]`` holds ``subjects[i]``'s images);
    :func:`fit_selectors` fits the shared selectors to all of them at once. The layer scores read
    the training images once and hold their pooled features (and, when they fit the budget too,
    the per-cell scores' projected cells; else the per-cell scores read the store once more), so
    memory does not grow with images x vertices; a subject whose training features the fit
    already holds (``tokens``) is not read from the store at all.

    Args:
        layer_indices: store indices of the fit's layers (resolved once by the input checks).
        device: the fit's resolved device.
        layer_sets: when given and ``cfg.layer_resamples > 0``, receives each subject's
            layer sets (:mod:`stages.fit.layer_confidence`) from a bootstrap of the same scores.
        tokens: per subject, its training features held by the fit's resident source, or None.
    """
    if cfg.warm_start == "none":
        return {}
    started = time.perf_counter()
    release_free_memory()   # what the caller freed before the fit (reading the subject, say) leaves the heap first
    seconds = {"layer": 0.0, "space": 0.0}
    layer_targets, space_targets = [], []
    for store, subject, held in zip(stores, subjects, tokens or [None] * len(subjects)):
        tic = time.perf_counter()
        bootstrap = None
        cells = None if held is not None or cfg.warm_start != "layer+space" else ProjectedCells(
            cell_projections(store, layer_indices, seed=cfg.seed, device=device))
        if layer_sets is not None and cfg.layer_resamples > 0:
            bootstrap = LayerBootstrap(len(subject.splits["train"]), len(layer_indices), subject.n_vertices,
                                       n_resamples=cfg.layer_resamples, seed=cfg.seed, device=device)
        scores = score_layers(store, subject, layer_indices=layer_indices, grid=cfg.grid, device=device,
                              alphas=SCORE_SETTINGS.alphas, feature_sets=SCORE_SETTINGS.feature_sets,
                              local_pool=SCORE_SETTINGS.local_pool, batch_size=SCORE_SETTINGS.batch_size,
                              bootstrap=bootstrap, tokens=held, cells=cells)
        if bootstrap is not None:
            moments = ResponseMoments.of(subject.responses, np.asarray(subject.splits["train"]))
            layer_sets.append(bootstrap.sets(noise_floor=noise_floor(moments.sum_squares / moments.n,
                                                                     subject.noise_ceiling),
                                             model_error=cfg.layer_model_error))
            del bootstrap
        layer_targets.append(score_targets(scores, temperature=cfg.warm_start_temperature))
        seconds["layer"] += time.perf_counter() - tic
        if cfg.warm_start == "layer+space":
            tic = time.perf_counter()
            best = np.nan_to_num(scores, nan=-np.inf).argmax(axis=1)
            space_targets.append(centre_targets(cell_scores(store, subject, layer_indices=layer_indices,
                                                            best_layer=best, grid=cfg.grid, seed=cfg.seed,
                                                            device=device, tokens=held, cells=cells), cfg.grid))
            del cells
            seconds["space"] += time.perf_counter() - tic
    losses = fit_selectors(model, layer_targets=layer_targets, space_targets=space_targets or None)
    return {"warm_start_seconds": time.perf_counter() - started, "warm_start_layer_scores_seconds": seconds["layer"],
            "warm_start_cell_scores_seconds": seconds["space"],
            **{f"warm_start_{k}_loss": v for k, v in losses.items()}}
