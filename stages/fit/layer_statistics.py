"""Sufficient statistics of one feature set of one layer against every vertex, and their scores.

The pieces :mod:`stages.fit.layer_scores` plans and feeds (the math is in its docs):
:class:`ResponseMoments` (the responses' training mean and sum of squares, in row blocks),
:class:`LayerStatistics` (a feature set's accumulators, its GCV or exact leave-one-out scores
and the held-out errors behind them) and :func:`gcv_choice` (the GCV score of every alpha
from a spectrum and the responses' coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stages.fit.ridge_solver import (
    RELATIVE_EIGENVALUE_FLOOR, KernelSpectrum, choose_alphas, loo_errors, loo_residuals, spectrum_from_kernel,
)

#: Training rows of the responses handled at once where they are read outside the store pass.
ROW_BLOCK = 2048
#: Vertices scored at once (bounds a float64 (features or images, block) temporary: 0.1 GB at 3,072 features).
VERTEX_BLOCK = 4096


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


class LayerStatistics:
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
        :meth:`squared_errors` are wanted. Nothing is computed for the others.

        Feature space: the solution overwrites the coordinates, kept columns first in every row, and is a view of
        them, so no second ``n_features x n_vertices`` array exists beside them (0.33 GB at subj01 size)."""
        self.kept = columns
        if not self.primal:
            self.residuals = self.residuals[:, columns].contiguous()
            return
        shrink = self.shrink.T.contiguous()                                                # (k, n_alphas)
        for start in range(0, len(columns), VERTEX_BLOCK):
            # columns[j] >= j (ascending, distinct): a block's sources lie at or after its targets, so no block
            # reads a column an earlier block wrote; within a block, index_select copies before the write
            block = columns[start:start + VERTEX_BLOCK]
            solved = self.coordinates.index_select(1, block).mul_(shrink.index_select(1, self.chosen[block]))
            self.coordinates[:, start:start + len(block)] = solved
        self.solution = self.coordinates[:, :len(columns)]
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


def gcv_choice(eigenvalues: torch.Tensor, coordinates: torch.Tensor, moments: ResponseMoments,
               alphas: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Best ``1 - GCV / var(y)`` over ``alphas`` per vertex (see :mod:`stages.fit.layer_scores`) and the index into
    ``alphas`` that reaches it.

    Args:
        eigenvalues: float64 tensor of shape (k,), the kernel's non-zero spectrum.
        coordinates: tensor of shape (k, n_vertices), the centred responses on its eigenvectors.
        moments: the responses' training moments (``sum_squares`` and ``n``).
        alphas: float64 tensor of shape (n_alphas,).

    Returns:
        float64 array of shape (n_vertices,) and int64 tensor of shape (n_vertices,).
    """
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
        squares = coordinates[:, start:stop].to(torch.float64, copy=True).square_()
        explained = explained_weight @ squares                                            # (n_alphas, block)
        rss = (total[start:stop] - explained).clamp_min(0.0)
        errors = rss / denominator[:, None]
        best[start:stop], index[start:stop] = (1.0 - errors / (total[start:stop] / n).clamp_min(1e-300)).max(dim=0)
    return best.cpu().numpy(), index


def _row_blocks(rows: np.ndarray) -> list[np.ndarray]:
    return [rows[start:start + ROW_BLOCK] for start in range(0, len(rows), ROW_BLOCK)]
