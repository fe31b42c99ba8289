"""Ridge regression for many targets at once: one eigendecomposition, every alpha and every vertex in closed form.

Everything is expressed through the spectrum of the centred training kernel
``K = Xc Xc^T = Q diag(lam) Q^T`` (restricted to its range). With an unpenalised
intercept (the features and targets are centred), for a penalty ``alpha``:

* dual coefficients ``c = Q diag(1 / (lam + alpha)) Q^T Yc``, weights ``beta = Xc^T c``;
* fitted values ``Q diag(f) Q^T Yc`` with ``f = lam / (lam + alpha)``;
* leverage ``h_i = 1 / n + sum_j Q_ij^2 f_j`` and the exact leave-one-out residual
  ``(y_i - yhat_i) / (1 - h_i)`` (the same criterion as scikit-learn's ``RidgeCV``
  with ``cv=None``).

So choosing a per-target alpha from a grid costs one decomposition plus one
``(n_train, k) x (k, n_targets)`` product per alpha; there is no loop over targets.
Banded ridge reuses the same functions on a weighted sum of per-band kernels.
Computations run in float64 (leave-one-out residuals divide by ``1 - h_i``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Eigenvalues below this fraction of the largest are treated as zero (the null space).
RELATIVE_EIGENVALUE_FLOOR = 1e-10


@dataclass(frozen=True)
class KernelSpectrum:
    """Range of a centred training kernel: ``K = basis @ diag(eigenvalues) @ basis.T``.

    Attributes:
        basis: float64 tensor of shape (n_train, k), orthonormal columns.
        eigenvalues: float64 tensor of shape (k,), all > 0.
    """

    basis: torch.Tensor
    eigenvalues: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.basis.shape[0])


def spectrum_from_kernel(kernel: torch.Tensor) -> KernelSpectrum:
    """Spectrum of a centred training kernel of shape (n_train, n_train)."""
    eigenvalues, basis = torch.linalg.eigh(kernel.double())
    keep = eigenvalues > RELATIVE_EIGENVALUE_FLOOR * eigenvalues.max().clamp_min(1e-300)
    return KernelSpectrum(basis=basis[:, keep].contiguous(), eigenvalues=eigenvalues[keep])


def spectrum_from_features(features: torch.Tensor) -> tuple[KernelSpectrum, torch.Tensor]:
    """Spectrum of ``Xc Xc^T`` for centred features, through the smaller of the two Gram matrices.

    Args:
        features: centred training features, tensor of shape (n_train, n_features).

    Returns:
        the spectrum, and ``projection = Xc^T Q`` of shape (n_features, k): the cross
        kernel of new centred rows ``E`` against the training rows, projected on the
        basis, is ``E @ projection`` (see :func:`predict`).
    """
    x = features.double()
    n_train, n_features = x.shape
    if n_features >= n_train:
        spectrum = spectrum_from_kernel(x @ x.T)
        return spectrum, x.T @ spectrum.basis
    eigenvalues, vectors = torch.linalg.eigh(x.T @ x)
    keep = eigenvalues > RELATIVE_EIGENVALUE_FLOOR * eigenvalues.max().clamp_min(1e-300)
    eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
    basis = (x @ vectors) / eigenvalues.sqrt()
    return KernelSpectrum(basis=basis, eigenvalues=eigenvalues), vectors * eigenvalues.sqrt()


def loo_errors(spectrum: KernelSpectrum, targets: torch.Tensor, alphas: torch.Tensor, *,
               target_chunk: int = 8192) -> torch.Tensor:
    """Mean squared leave-one-out error of every alpha for every target.

    Args:
        spectrum: of the centred training kernel.
        targets: centred training targets, tensor of shape (n_train, n_targets).
        alphas: tensor of shape (n_alphas,), > 0.
        target_chunk: targets processed at once (bounds memory to ~n_train x chunk).

    Returns:
        float64 tensor of shape (n_alphas, n_targets).
    """
    basis, eigenvalues = spectrum.basis, spectrum.eigenvalues
    alphas = alphas.double().to(basis.device)
    shrink = eigenvalues[None, :] / (eigenvalues[None, :] + alphas[:, None])   # (n_alphas, k)
    leverage = 1.0 / spectrum.n_train + (basis**2) @ shrink.T                  # (n_train, n_alphas)
    errors = torch.empty(len(alphas), targets.shape[1], dtype=torch.float64, device=basis.device)
    for start in range(0, targets.shape[1], target_chunk):
        y = targets[:, start:start + target_chunk].double()
        coordinates = basis.T @ y
        for index in range(len(alphas)):
            residual = y - basis @ (shrink[index, :, None] * coordinates)
            errors[index, start:start + y.shape[1]] = ((residual / (1 - leverage[:, index:index + 1])) ** 2).mean(0)
    return errors


def loo_residuals(spectrum: KernelSpectrum, targets: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Exact leave-one-out residuals ``(y_i - yhat_i) / (1 - h_i)``, each target with its own alpha.

    Args:
        spectrum: of the centred training kernel.
        targets: centred training targets, tensor of shape (n_train, n_targets).
        alphas: per-target penalties, tensor of shape (n_targets,) (e.g. from :func:`choose_alphas`).

    Returns:
        float64 tensor of shape (n_train, n_targets); their mean square is :func:`loo_errors` at that alpha.
    """
    basis, eigenvalues = spectrum.basis, spectrum.eigenvalues
    y = targets.double()
    coordinates = basis.T @ y
    alphas = alphas.double().to(basis.device)
    residuals = torch.empty_like(y)
    for alpha in torch.unique(alphas):
        chosen = alphas == alpha
        shrink = eigenvalues / (eigenvalues + alpha)
        leverage = 1.0 / spectrum.n_train + (basis ** 2) @ shrink
        fitted = basis @ (shrink[:, None] * coordinates[:, chosen])
        residuals[:, chosen] = (y[:, chosen] - fitted) / (1.0 - leverage)[:, None]
    return residuals


def predict(spectrum: KernelSpectrum, cross: torch.Tensor, targets: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Ridge predictions for new rows, each target with its own alpha (intercept excluded).

    Args:
        spectrum: of the centred training kernel.
        cross: projected cross kernel of the new rows, tensor of shape (n_new, k):
            ``E @ projection`` from :func:`spectrum_from_features`, or ``K_new @ basis``.
        targets: centred training targets, tensor of shape (n_train, n_targets).
        alphas: per-target penalties, tensor of shape (n_targets,).

    Returns:
        float64 tensor of shape (n_new, n_targets); add the training target mean.
    """
    coordinates = spectrum.basis.T @ targets.double()                          # (k, n_targets)
    prediction = torch.empty(cross.shape[0], targets.shape[1], dtype=torch.float64, device=cross.device)
    alphas = alphas.double().to(cross.device)
    for alpha in torch.unique(alphas):
        chosen = alphas == alpha
        prediction[:, chosen] = cross.double() @ (coordinates[:, chosen] / (spectrum.eigenvalues + alpha)[:, None])
    return prediction


def ridge_coefficients(features: np.ndarray, targets: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights and intercepts of ridge regressions with an unpenalised intercept (as ``sklearn.linear_model.Ridge``).

    Args:
        features: array of shape (n_train, n_features).
        targets: array of shape (n_train, n_targets).
        alphas: per-target penalties, array of shape (n_targets,) (or a scalar).

    Returns:
        coefficients of shape (n_targets, n_features) and intercepts of shape (n_targets,).
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    y = torch.as_tensor(np.asarray(targets, dtype=np.float64))
    x_mean, y_mean = x.mean(0), y.mean(0)
    spectrum, projection = spectrum_from_features(x - x_mean)
    alphas = torch.as_tensor(np.broadcast_to(np.asarray(alphas, dtype=np.float64), (y.shape[1],)).copy())
    weights = predict(spectrum, projection, y - y_mean, alphas)               # (n_features, n_targets)
    return weights.T.numpy(), (y_mean - x_mean @ weights).numpy()


def choose_alphas(errors: torch.Tensor, alphas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target best alpha from :func:`loo_errors`: (alpha, its error), both of shape (n_targets,).

    Ties go to the largest alpha (the most regularised of equally good fits).
    """
    flipped = errors.flip(0)
    index = flipped.argmin(dim=0)
    best = flipped.gather(0, index[None])[0]
    return alphas.double().to(errors.device).flip(0)[index], best
