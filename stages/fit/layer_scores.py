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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cache.store import FeatureStore
from stages.fit.pooled_features import (
    HeldTokens, PooledFeatures, ProjectedCells, ScoreBatch, set_widths, streamed_batches,
)
from stages.fit.ridge_solver import (
    RELATIVE_EIGENVALUE_FLOOR, KernelSpectrum, choose_alphas, loo_errors, loo_residuals, spectrum_from_kernel,
)
from stages.fit.layer_confidence import LayerBootstrap
from stages.resources import free_memory
from stages.subject import Subject

#: Host memory the scores may hold (bytes): the pooled features when held, plus one group's accumulators. At
#: subj01 scale (8,882 training images, 37,984 vertices, 12 layers of 768 channels) the pooled features take
#: 0.82 GB in float16 and one layer's accumulators 0.66 GB: one store pass, then one layer at a time.
BUDGET_BYTES = 3 * 2**29
#: Share of the free memory (device or host) the scores may take at most.
MEMORY_FRACTION = 0.4
#: Training rows of the responses handled at once where they are read outside the store pass.
ROW_BLOCK = 2048
#: Vertices scored at once (bounds a float64 (features or images, block) temporary).
VERTEX_BLOCK = 8192


@dataclass(frozen=True)
class ResponseMoments:
    """Training-row statistics of a subject's responses, computed in row blocks (float64).

    Attributes:
        mean: array of shape (n_vertices,).
        sum_squares: sum over training rows of the centred responses squared, shape (n_vertices,).
        n: number of training rows.
    """

    mean: np.ndarray
    sum_squares: np.ndarray
    n: int

    @classmethod
    def of(cls, responses: np.ndarray, rows: np.ndarray) -> "ResponseMoments":
        """Moments of ``responses[rows]`` without ever copying more than ``ROW_BLOCK`` rows."""
        total = np.zeros(responses.shape[1])
        for block in _row_blocks(rows):
            total += responses[block].sum(axis=0, dtype=np.float64)
        mean = total / len(rows)
        squares = np.zeros(responses.shape[1])
        for block in _row_blocks(rows):
            squares += ((responses[block] - mean) ** 2).sum(axis=0)
        return cls(mean=mean, sum_squares=squares, n=len(rows))

    def centred(self, responses: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
        """``responses[rows] - mean`` as a float32 tensor on ``device``."""
        rows_read = torch.as_tensor(np.asarray(responses[rows], dtype=np.float32), device=device)
        return rows_read - torch.as_tensor(self.mean, dtype=torch.float32, device=device)


class _Statistics:
    """Sufficient statistics of one feature set of one layer against every vertex.

    ``primal`` (fewer features than images): column sums, ``X^T X`` and ``X^T y`` of the
    features shifted by their first batch's mean (exact: the responses are centred, and
    the shift is undone in the Gram matrix); otherwise the shifted features themselves.

    ``whiten_first`` (primal only; for features read from memory, which a second pass costs
    nothing to re-read): the first pass takes ``X^T X`` alone; :meth:`whiten` then finds the
    whitening rotation and a second pass (:meth:`project`) accumulates the responses'
    coordinates ``(X R)^T y`` directly. That replaces the rotation of ``X^T y`` afterwards
    (``n_features^2 x n_vertices`` multiply-adds, more than ``n_images x n_features^2`` when
    vertices outnumber images) and never holds ``X^T y`` beside the coordinates.
    """

    def __init__(self, n_features: int, n_vertices: int, n_images: int, device: torch.device, *,
                 whiten_first: bool = False) -> None:
        self.n_features, self.n_vertices, self.n_images, self.device = n_features, n_vertices, n_images, device
        self.primal = n_features < n_images
        self.whiten_first = whiten_first and self.primal
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.sums = torch.zeros(n_features, dtype=torch.float64, device=device)
        if self.primal:
            self.gram = torch.zeros(n_features, n_features, dtype=torch.float64, device=device)
            if not self.whiten_first:
                self.cross = torch.zeros(n_features, n_vertices, dtype=torch.float32, device=device)
        else:
            self.rows = torch.zeros(n_images, n_features, dtype=torch.float32, device=device)

    @property
    def needs_targets(self) -> bool:
        """Whether :meth:`add` uses the batch's responses (a primal statistic accumulating ``X^T y``)."""
        return self.primal and not self.whiten_first

    @staticmethod
    def nbytes(n_features: int, n_vertices: int, n_images: int, *, keep_residuals: bool = False) -> int:
        """Bytes one accumulator holds during the pass (solving it later takes about as much again, one at a time);
        with ``keep_residuals`` the image-kernel form also keeps its (n_images, n_vertices) residuals."""
        if n_features < n_images:
            return 4 * n_features * n_vertices + 8 * n_features * n_features
        return 4 * n_images * n_features + (4 * n_images * n_vertices if keep_residuals else 0)

    def add(self, features: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor | None) -> None:
        """Add a batch: ``features`` (b, n_features) float32, ``positions`` its training-row indices,
        ``targets`` its centred responses (b, n_vertices) (used only when :attr:`needs_targets`)."""
        if self.shift is None:
            self.shift = features.mean(dim=0)
        shifted = features - self.shift
        self.n += len(shifted)
        self.sums += shifted.sum(dim=0, dtype=torch.float64)
        if self.primal:
            wide = shifted.double()
            self.gram.addmm_(wide.T, wide)
            if not self.whiten_first:
                self.cross.addmm_(shifted.T, targets)
        else:
            self.rows[positions] = shifted

    def whiten(self) -> None:
        """After the first pass of a ``whiten_first`` statistic: the spectrum and rotation, and zeroed coordinates
        for :meth:`project` to accumulate."""
        self.eigenvalues, self.rotation = self._eigen()
        self.coordinates = torch.zeros(self.rotation.shape[1], self.n_vertices, dtype=torch.float32,
                                       device=self.device)

    def project(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Second pass of a ``whiten_first`` statistic: add a batch's whitened features times its centred responses
        (b, n_vertices) to the coordinates."""
        self.coordinates.addmm_(self.whitened(features).T, targets)

    def whitened(self, features: torch.Tensor) -> torch.Tensor:
        """Features (b, n_features) centred with the training mean and rotated onto the z-scored eigenvectors, each
        scaled to unit eigenvalue: (b, k)."""
        return (features - self.shift - self.offset) @ self.rotation

    def scores(self, moments: ResponseMoments, responses: np.ndarray, train: np.ndarray,
               alphas: torch.Tensor, *, keep_residuals: bool = False) -> np.ndarray:
        """Best R^2 over ``alphas`` per vertex, float64 array of shape (n_vertices,); frees the statistics.

        Feature-space form: GCV. Image-kernel form (no more images than features): exact leave-one-out,
        whose per-image leverages the kernel's eigenvectors give at the same cost. With
        ``keep_residuals`` the solution at each vertex's alpha is kept for :meth:`squared_errors`
        (feature space: the whitening rotation and the shrunken coordinates, ``n_features x n_vertices`` at
        most; image kernel: the leave-one-out residuals themselves, ``n_images x n_vertices``), until
        :meth:`keep_columns` narrows it to the vertices whose errors are wanted.
        """
        if self.primal:
            eigenvalues, coordinates, rotation = self._primal_spectrum()
            best, chosen = gcv_choice(eigenvalues, coordinates, moments, alphas)
            if keep_residuals:
                self._keep_solution(eigenvalues, coordinates, rotation, chosen, alphas, moments.n)
            return best
        spectrum = self._dual_spectrum()
        best = np.empty(len(moments.mean))
        if keep_residuals:
            self.residuals = torch.empty(spectrum.n_train, len(best), dtype=torch.float32, device=self.device)
        for start in range(0, len(best), VERTEX_BLOCK):
            columns = slice(start, start + VERTEX_BLOCK)
            targets = torch.as_tensor(responses[train, columns] - moments.mean[columns], device=self.device)
            alpha, error = choose_alphas(loo_errors(spectrum, targets, alphas), alphas)
            variance = np.maximum(moments.sum_squares[columns] / moments.n, 1e-300)
            best[columns] = 1.0 - error.cpu().numpy() / variance
            if keep_residuals:
                self.residuals[:, columns] = loo_residuals(spectrum, targets, alpha).float()
        return best

    def keep_columns(self, columns: torch.Tensor) -> None:
        """Keep the solution of the vertices ``columns`` (int64 indices, ascending) only: those whose
        :meth:`squared_errors` are wanted. Nothing is computed for the others."""
        self.kept = columns
        if not self.primal:
            self.residuals = self.residuals[:, columns].contiguous()
            return
        self.solution = self.coordinates.index_select(1, columns)
        shrink = self.shrink.T.contiguous()                                                # (k, n_alphas)
        for start in range(0, len(columns), VERTEX_BLOCK):
            block = slice(start, start + VERTEX_BLOCK)
            self.solution[:, block] *= shrink.index_select(1, self.chosen[columns[block]])
        self.inflation = self.inflation[self.chosen[columns]]
        del self.coordinates, self.shrink, self.chosen

    def squared_errors(self, features: torch.Tensor | None, positions: torch.Tensor,
                       targets: torch.Tensor | None) -> torch.Tensor:
        """Squared held-out residuals of a batch of training images at each kept vertex's chosen alpha, shape
        (b, kept vertices): GCV residuals ``(y - yhat) / (1 - df / n)`` (feature space; ``features`` (b,
        n_features) and the kept vertices' centred ``targets`` (b, kept vertices) needed) or exact
        leave-one-out ones (image kernel, read by ``positions``). Their mean over the training images is the
        error behind :meth:`scores`."""
        if not self.primal:
            return self.residuals[positions] ** 2
        fitted = self.whitened(features) @ self.solution
        return fitted.sub_(targets).mul_(self.inflation).square_()

    def _keep_solution(self, eigenvalues: torch.Tensor, coordinates: torch.Tensor, rotation: torch.Tensor,
                       chosen: torch.Tensor, alphas: torch.Tensor, n: int) -> None:
        """What the ridge solution at each vertex's alpha takes, in whitened form, and its GCV residual inflation.

        The fitted values of centred features ``X`` are ``(X @ rotation) @ solution``, with ``solution`` the
        coordinates shrunk by ``s / (s + alpha)`` (made by :meth:`keep_columns` for the vertices kept): the
        same as ``X @ weights`` with the ridge weights ``rotation @ solution``, without their
        ``n_features^2 x n_vertices`` product.
        """
        shrink = eigenvalues[None, :] / (eigenvalues[None, :] + alphas[:, None])              # (n_alphas, k)
        self.rotation, self.coordinates, self.chosen = rotation, coordinates, chosen
        self.shrink = shrink.float()
        dof = 1.0 + shrink.sum(dim=1)
        self.inflation = (1.0 / (1.0 - dof / n).clamp_min(1e-6)).float()

    def _column_scale(self, variance: torch.Tensor) -> torch.Tensor:
        """1 / (column std x sqrt(n_features)); constant columns keep 1 (they are zero once centred)."""
        std = (variance / max(self.n - 1, 1)).clamp_min(0).sqrt()
        return torch.where(std > 0, 1.0 / std, torch.ones_like(std)) / np.sqrt(self.n_features)

    def _primal_spectrum(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eigenvalues of the z-scored ``X^T X``, the responses' coordinates and the rotation taking
        centred features to them (``(n_features, k)``), from the accumulated sums."""
        if self.whiten_first:
            return self.eigenvalues, self.coordinates, self.rotation
        eigenvalues, rotation = self._eigen()
        coordinates = rotation.T @ self.cross                                             # (k, n_vertices)
        del self.cross
        return eigenvalues, coordinates, rotation

    def _eigen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues of the z-scored ``X^T X`` above the floor and the rotation ``(n_features, k)`` taking centred
        features onto its eigenvectors at unit eigenvalue; sets the training mean :attr:`offset` (relative to the
        shift) and frees the Gram matrix."""
        mean = self.sums / self.n
        gram = self.gram - self.n * torch.outer(mean, mean)
        del self.gram
        scale = self._column_scale(gram.diagonal())
        eigenvalues, vectors = torch.linalg.eigh(gram * scale[:, None] * scale[None, :])
        keep = eigenvalues > RELATIVE_EIGENVALUE_FLOOR * eigenvalues.max().clamp_min(1e-300)
        eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
        self.offset = mean.float()
        return eigenvalues, (vectors * scale[:, None] / eigenvalues.sqrt()).float()

    def _dual_spectrum(self) -> KernelSpectrum:
        """The spectrum of the z-scored image kernel (eigenvectors of shape (n_images, k))."""
        centred = self.rows.double() - self.sums / self.n
        del self.rows
        features = centred * self._column_scale((centred ** 2).sum(dim=0))
        return spectrum_from_kernel(features @ features.T)


def gcv_scores(eigenvalues: torch.Tensor, coordinates: torch.Tensor, moments: ResponseMoments,
               alphas: torch.Tensor) -> np.ndarray:
    """Best ``1 - GCV / var(y)`` over ``alphas`` per vertex (see the module docs).

    Args:
        eigenvalues: float64 tensor of shape (k,), the kernel's non-zero spectrum.
        coordinates: tensor of shape (k, n_vertices), the centred responses on its eigenvectors.
        moments: the responses' training moments (``sum_squares`` and ``n``).
        alphas: float64 tensor of shape (n_alphas,).

    Returns:
        float64 array of shape (n_vertices,).
    """
    return gcv_choice(eigenvalues, coordinates, moments, alphas)[0]


def gcv_choice(eigenvalues: torch.Tensor, coordinates: torch.Tensor, moments: ResponseMoments,
               alphas: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`gcv_scores` and the index into ``alphas`` that reaches it (int64 tensor of shape (n_vertices,))."""
    n = moments.n
    shrink = eigenvalues[None, :] / (eigenvalues[None, :] + alphas[:, None])              # (n_alphas, k)
    explained_weight = 1.0 - (1.0 - shrink) ** 2
    dof = 1.0 + shrink.sum(dim=1)                                                         # (n_alphas,)
    denominator = (1.0 - dof / n).clamp_min(1e-12) ** 2 * n
    total = torch.as_tensor(moments.sum_squares, device=coordinates.device)
    best = torch.full((coordinates.shape[1],), -torch.inf, dtype=torch.float64, device=coordinates.device)
    index = torch.zeros(coordinates.shape[1], dtype=torch.long, device=coordinates.device)
    for start in range(0, coordinates.shape[1], VERTEX_BLOCK):
        stop = start + VERTEX_BLOCK
        explained = explained_weight @ coordinates[:, start:stop].double() ** 2           # (n_alphas, block)
        rss = (total[start:stop] - explained).clamp_min(0.0)
        errors = rss / denominator[:, None]
        best[start:stop], index[start:stop] = (1.0 - errors / (total[start:stop] / n).clamp_min(1e-300)).max(dim=0)
    return best.cpu().numpy(), index


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
    sizes = [sum(_Statistics.nbytes(widths[slot][name], subject.n_vertices, len(train),
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
        statistics = {(slot, name): _Statistics(widths[slot][name], subject.n_vertices, len(train), device,
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
    return scores.astype(np.float32)


def _accumulate(statistics: dict[tuple[int, str], _Statistics], batches: Callable[[list[int]], Iterator[ScoreBatch]],
                group: list[int], *, moments: ResponseMoments, responses: np.ndarray, train: np.ndarray,
                device: torch.device) -> None:
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


def _bootstrap_errors(subject: Subject, statistics: dict[tuple[int, str], _Statistics],
                      group: list[int], bootstrap: LayerBootstrap,
                      features: Iterator[ScoreBatch] | None, *, moments: ResponseMoments,
                      feature_sets: Sequence[str], batch_size: int, device: torch.device) -> None:
    """Add one group of layers' per-image squared errors to ``bootstrap``: at each vertex those of the feature
    set that scores best there, the vertices each statistic kept (:meth:`_Statistics.keep_columns`).
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
                bootstrap.add(slot, positions, statistics[slot, name].squared_errors(values.get(name), positions, these),
                              columns=None if whole else kept)


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


def _row_blocks(rows: np.ndarray) -> list[np.ndarray]:
    return [rows[start:start + ROW_BLOCK] for start in range(0, len(rows), ROW_BLOCK)]
