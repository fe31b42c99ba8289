"""Per-layer ridge scores from streamed sufficient statistics: the warm start's evidence at any scale.

For every layer and feature set (the global token; the local tokens average-pooled to
``local_pool x local_pool``), a ridge regression to every vertex is scored on the training
images, the best of the alpha grid per vertex, with the ridge baseline's normalisation
(centred, z-scored columns divided by sqrt(n_features)). Two forms, chosen per feature set:

* **Feature space** (more training images than features, the case at scale): the
  generalised cross-validation (GCV) error (Golub, Heath and Wahba 1979), leave-one-out
  with every image's leverage replaced by the mean leverage. It follows from sufficient
  statistics alone: with ``X^T X = V diag(s) V^T`` the responses' coordinates are
  ``c = diag(s)^(-1/2) V^T X^T y``; for a penalty ``alpha`` the shrinkage is
  ``f = s / (s + alpha)``, the residual sum of squares ``|y|^2 - sum (1 - (1 - f)^2) c^2``
  and the degrees of freedom ``1 + sum f`` (the intercept counts one), so
  ``GCV = (RSS / n) / (1 - df / n)^2`` and the score is ``1 - GCV / var(y)``. With many
  more images than features the leverages are nearly equal and GCV is close to exact
  leave-one-out.
* **Image kernel** (no more training images than features): the features themselves are
  kept (``n_images x n_features``, smaller than ``X^T X``) and scored by exact
  leave-one-out through the kernel's eigenvectors (``stages.fit.ridge_solver``), reading
  the responses in vertex blocks. Here leverages vary most, and GCV would blur them.

Per layer and feature set, the column sums and ``X^T X`` (float64) are accumulated over
the training images, and the responses' coordinates on the whitened eigenvectors for every
vertex (float32); layers are grouped so that a group's accumulators fit the memory budget.
The features come from one pass over the store reading every layer, whose pooled sets are
held in memory (``stages.fit.pooled_features``: 5 numbers per channel per image against the
store's 65) while every group's statistics and the bootstrap's residuals are taken from
them: a first pass for ``X^T X``, its whitening, then a second pass projecting the
whitened features on the responses. Only when even float16 copies do not fit beside one
layer's accumulators does each group stream the store itself, accumulating ``X^T y`` in
the same pass and rotating it afterwards (a second store pass with a feature-space
bootstrap). Memory therefore grows with features x vertices plus images x pooled features,
never with images x vertices, and the cost is ``n_images x n_features x n_vertices``
multiply-adds plus ``n_images x n_features^2`` for the whitening (streamed:
``n_features^2 x n_vertices`` for the rotation).

This module plans the passes and feeds them; the statistics, their scores and the held-out
errors behind them are :mod:`stages.fit.layer_statistics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from cache.store import FeatureStore
from stages.fit.pooled_features import (
    HeldTokens, PooledFeatures, ProjectedCells, ScoreBatch, set_widths, streamed_batches,
)
from stages.fit.layer_confidence import LayerBootstrap
from stages.fit.layer_statistics import LayerStatistics, ResponseMoments
from stages.resources import free_memory, release_free_memory
from stages.subject import Subject

#: Host memory the scores may hold (bytes): the pooled features when held, the per-cell scores' projected cells
#: when they fit beside them, plus one group's accumulators. At subj01 scale (8,882 training images, 37,984
#: vertices, 12 layers of 768 channels) the pooled features take 0.82 GB in float16, the projected cells 0.44 GB
#: and one layer's accumulators 0.66 GB (1.93 GB): one store pass, then one layer at a time.
BUDGET_BYTES = 15 * 2**27
#: Share of the free memory (device or host) the scores may take at most.
MEMORY_FRACTION = 0.4


def score_budget(device: torch.device) -> int:
    """Bytes the scores may hold (held features plus accumulators): on a GPU, ``MEMORY_FRACTION`` of its free
    memory; on the host, at most ``BUDGET_BYTES`` (the fit's host memory goal) and that fraction of what is free."""
    free = free_memory(device)
    if device.type == "cuda":
        return int(MEMORY_FRACTION * free)
    return int(min(BUDGET_BYTES, MEMORY_FRACTION * free))


def plan_passes(sizes: Sequence[int], held_bytes: dict[str, int], budget_bytes: int, *,
                hold: str = "auto") -> tuple[str | None, list[list[int]]]:
    """How the scores read the store: the dtype the pooled features are held in (None: streamed, one store pass
    per group) and the groups of layer slots whose accumulators are held at once.

    Args:
        sizes: accumulator bytes of each layer slot.
        held_bytes: ``"float32"`` / ``"float16"`` -> bytes of every layer's pooled features in that dtype.
        budget_bytes: what the held features and one group's accumulators may take together.
        hold: ``"auto"`` (float32 when it and the largest layer's accumulators fit the budget, else float16,
            else streamed), ``"float32"``, ``"float16"`` or ``"off"`` (streamed).
    """
    if hold == "auto":
        fitting = [name for name in ("float32", "float16") if held_bytes[name] + max(sizes) <= budget_bytes]
        hold = fitting[0] if fitting else "off"
    if hold == "off":
        return None, _layer_groups(sizes, budget_bytes)
    return hold, _layer_groups(sizes, budget_bytes - held_bytes[hold])


def score_layers(store: FeatureStore, subject: Subject, *, layer_indices: Sequence[int], grid: int,
                 device: torch.device, alphas: Sequence[float], feature_sets: Sequence[str] = ("global", "local"),
                 local_pool: int = 2, batch_size: int = 256, budget_bytes: int | None = None,
                 bootstrap: LayerBootstrap | None = None, hold: str = "auto",
                 tokens: HeldTokens | None = None, cells: ProjectedCells | None = None) -> np.ndarray:
    """GCV R^2 on the training images of a ridge per layer (best feature set and alpha), per vertex.

    The evidence for a warm start of FactorTopy's layer selector: it touches neither the
    validation nor the test images. The store is not read when the fit holds the features
    (``tokens``), read once when the pooled features are held (:func:`plan_passes`), else once
    per group of layers (twice with a feature-space bootstrap).

    Args:
        layer_indices: store indices of the layers to score.
        grid: the stored local grid to read.
        device: where the statistics are accumulated and solved, and the pooled features held.
        alphas: the penalty grid (on the normalised kernel scale of ``stages.fit.ridge``).
        feature_sets: subset of ``("global", "local")``.
        local_pool: side of the average-pooled local grid.
        budget_bytes: memory the held features and one group's accumulators may take (at least one layer per
            group); None = :func:`score_budget` of ``device``.
        bootstrap: when given (shaped training images x these layers x vertices), it receives
            every layer's per-image squared held-out errors (of the feature set that scores best
            at each vertex) for the layer sets of :mod:`stages.fit.layer_confidence`.
        hold: how the pooled features are held, see :func:`plan_passes`.
        tokens: the training images' features of these layers, already held by the fit: then the store is not
            read and nothing more is held (``hold`` is ignored).
        cells: filled from the same store pass when the pooled features are held and the cells fit the budget
            beside them (their bytes count in it); otherwise left empty (``cells.values`` None).

    Returns:
        float32 array of shape (n_vertices, n_layers).
    """
    train = np.asarray(subject.splits["train"])
    ids = list(subject.stimulus_ids[train])
    responses = subject.responses
    moments = ResponseMoments.of(responses, train)
    alpha_grid = torch.tensor(list(alphas), dtype=torch.float64, device=device)
    widths = [set_widths(store, layer, local_pool=local_pool) for layer in layer_indices]
    sizes = [sum(LayerStatistics.nbytes(widths[slot][name], subject.n_vertices, len(train),
                                    keep_residuals=bootstrap is not None) for name in feature_sets)
             for slot in range(len(layer_indices))]
    held_bytes = {name: PooledFeatures.nbytes(widths, len(train), feature_sets=feature_sets, dtype=getattr(torch, name))
                  for name in ("float32", "float16")}
    budget = score_budget(device) if budget_bytes is None else budget_bytes
    hold = "off" if tokens is not None else hold
    cell_bytes = 0 if cells is None else cells.nbytes(len(train), grid * grid)
    dtype, groups = plan_passes(sizes, {name: size + cell_bytes for name, size in held_bytes.items()}, budget,
                                hold=hold)
    if dtype is None and cell_bytes:   # the pooled features alone may still fit
        cells = None
        dtype, groups = plan_passes(sizes, held_bytes, budget, hold=hold)
    held = None if dtype is None else PooledFeatures.read(
        store, ids, layer_indices=layer_indices, grid=grid, local_pool=local_pool, feature_sets=feature_sets,
        batch_size=batch_size, device=device, dtype=getattr(torch, dtype), cells=cells)
    release_free_memory()   # the store pass's decoded blocks: else the first group's peak is 0.4 GB above the rest
    order = store.batch_order(ids, batch_size=batch_size) if tokens is not None else None

    def batches(group: list[int]) -> Iterator[ScoreBatch]:
        if tokens is not None:
            return tokens.batches(order, group, local_pool=local_pool, feature_sets=feature_sets)
        if held is not None:
            return held.batches(group)
        return streamed_batches(store, ids, layer_indices=[layer_indices[slot] for slot in group], grid=grid,
                                local_pool=local_pool, feature_sets=feature_sets, batch_size=batch_size, device=device)

    scores = np.full((subject.n_vertices, len(layer_indices)), -np.inf)
    for group in groups:
        statistics = {(slot, name): LayerStatistics(widths[slot][name], subject.n_vertices, len(train), device,
                                                    whiten_first=dtype is not None or tokens is not None)
                      for slot in group for name in feature_sets}
        _accumulate(statistics, batches, group, moments=moments, responses=responses, train=train,
                    device=device)
        primal = any(stat.primal for stat in statistics.values())
        set_scores = {key: stat.scores(moments, responses, train, alpha_grid, keep_residuals=bootstrap is not None)
                      for key, stat in statistics.items()}
        for (slot, _), values in set_scores.items():
            scores[:, slot] = np.maximum(scores[:, slot], values)
        if bootstrap is not None:
            best_set = {slot: np.stack([set_scores[slot, name] for name in feature_sets]).argmax(axis=0)
                        for slot in group}
            for (slot, name), stat in statistics.items():
                stat.keep_columns(torch.as_tensor(np.flatnonzero(best_set[slot] == feature_sets.index(name)),
                                                  device=device))
            features = batches(group) if primal else None
            _bootstrap_errors(subject, statistics, group, bootstrap, features, moments=moments,
                              feature_sets=feature_sets, batch_size=batch_size, device=device)
        del statistics
        release_free_memory()   # else the C heap keeps each group's freed temporaries: +0.1 GB per layer here
    return scores.astype(np.float32)


def _accumulate(statistics: dict[tuple[int, str], LayerStatistics],
                batches: Callable[[list[int]], Iterator[ScoreBatch]], group: list[int], *,
                moments: ResponseMoments, responses: np.ndarray, train: np.ndarray, device: torch.device) -> None:
    """One pass of ``batches(group)`` into the group's statistics; then, for the ``whiten_first`` ones, their
    whitening and a second pass (the features are in memory) for the responses' coordinates."""
    needs_targets = any(stat.needs_targets for stat in statistics.values())
    for rows, sets in batches(group):
        targets = moments.centred(responses, train[rows], device) if needs_targets else None
        positions = torch.as_tensor(rows, device=device)
        for slot, values in zip(group, sets):
            for name, tensor in values.items():
                statistics[slot, name].add(tensor, positions, targets)
    whitened = {key: stat for key, stat in statistics.items() if stat.whiten_first}
    if not whitened:
        return
    for stat in whitened.values():
        stat.whiten()
    for rows, sets in batches(group):
        targets = moments.centred(responses, train[rows], device)
        for slot, values in zip(group, sets):
            for name, tensor in values.items():
                if (slot, name) in whitened:
                    whitened[slot, name].project(tensor, targets)


def _bootstrap_errors(subject: Subject, statistics: dict[tuple[int, str], LayerStatistics],
                      group: list[int], bootstrap: LayerBootstrap,
                      features: Iterator[ScoreBatch] | None, *, moments: ResponseMoments,
                      feature_sets: Sequence[str], batch_size: int, device: torch.device) -> None:
    """Add one group of layers' per-image squared errors to ``bootstrap``: at each vertex those of the feature
    set that scores best there, the vertices each statistic kept (:meth:`LayerStatistics.keep_columns`).
    Feature-space sets need the group's ``features`` once more (from the held pooled features, or another
    store pass); image-kernel sets read their kept residuals (``features`` None)."""
    train = np.asarray(subject.splits["train"])
    if features is None:
        features = ((np.arange(start, min(start + batch_size, len(train))), [{} for _ in group])
                    for start in range(0, len(train), batch_size))
    for rows, sets in features:
        positions = torch.as_tensor(rows, device=device)
        targets = moments.centred(subject.responses, train[rows], device) if sets[0] else None
        for slot, values in zip(group, sets):
            for name in feature_sets:
                kept = statistics[slot, name].kept
                if len(kept) == 0:
                    continue
                whole = len(kept) == subject.n_vertices
                these = None if targets is None else targets if whole else targets[:, kept]
                errors = statistics[slot, name].squared_errors(values.get(name), positions, these)
                bootstrap.add(slot, positions, errors, columns=None if whole else kept)


def _layer_groups(sizes: Sequence[int], budget_bytes: int) -> list[list[int]]:
    """Consecutive layer slots whose accumulators fit ``budget_bytes`` together (one slot at least)."""
    groups: list[list[int]] = []
    held = budget_bytes + 1
    for slot, size in enumerate(sizes):
        if held + size > budget_bytes and (not groups or groups[-1]):
            groups.append([])
            held = 0
        groups[-1].append(slot)
        held += size
    return groups
