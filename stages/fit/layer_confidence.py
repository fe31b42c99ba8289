"""Layer confidence: the set of layers a vertex cannot tell apart from its best one, by a bootstrap over images.

The per-layer scores of the warm start (:mod:`stages.fit.layer_scores`) and of the ridge
baseline are each layer's mean squared held-out error over the training images,
``L_l = mean_i e_il^2`` per vertex, with ``e_il`` the image's leave-one-out residual (exact,
or the generalised cross-validation residual ``(y_i - yhat_i) / (1 - df / n)`` whose
mean square is the GCV error). How sure the ranking of the layers is follows from the
per-image squared errors, which are paired across layers (an image that is hard for one
layer is hard for its neighbours too):

* **Replicates.** Each training image gets ``n_resamples`` Poisson(1) weights ``w_bi``
  drawn once from the seed (the Poisson bootstrap: a streamed equivalent of resampling
  images with replacement), and ``L^b_l = sum_i w_bi e_il^2 / sum_i w_bi``. Only the
  weighted sums are kept: memory ``n_resamples x n_layers x n_vertices`` floats, whatever
  the number of images; the fits themselves are not refitted per replicate.
* **The 90 % layer set**: the layers not distinguishably worse than the best. With ``h`` the
  layer of smallest error, layer ``l`` is in the set unless its deficit ``L_l - L_h`` exceeds the
  ``level`` quantile over replicates of the centred deficit ``(L^b_l - L^b_h) - (L_l - L_h)``,
  i.e. unless a one-sided bootstrap test at ``1 - level`` says it is worse than ``h``. ``h``
  itself is always in. The truly best layer is in the set for about ``level`` of the vertices:
  somewhat less where several layers nearly tie (``h`` is picked from the same data; 0.83 in
  simulations with three tied layers), more where the others are clearly worse. On the
  synthetic subject the planted layer falls in this set for 0.86 of the vertices, with 3.6 of
  19 layers per set (``bench/recovery.py``). The stricter rule of multiple comparisons with the
  best (Hsu 1996: the deficit against *every* other layer at once) kept it for 0.99 but with
  9 of 19 layers per vertex, too wide to say anything, so it is not used.
* **Model error.** The replicates measure how the ranking would change with other images of the
  same kind, as if the fitted network held the brain's representation and only noise kept the
  layers apart. When the network is not the one that made the responses (every real brain), the
  layer that predicts best is only the network's nearest stand-in, and which of several similar
  layers wins also depends on how each happens to approximate the true features. Where the
  subject's noise ceiling is known the sets allow for this: the best layer's error above the
  noise floor, ``G = L_h - (1 - NC) var(y)`` (what even the best layer fails to explain),
  widens the threshold by ``model_error x G``, so a layer is kept unless its deficit exceeds the
  resampling quantile plus that allowance. ``G`` also holds the read-out's estimation error, so
  matched networks widen a little too. On demo subjects planted from MobileNetV2 (1,200 images,
  noise ceiling 0.4), against the fitted network's layer of highest linear CKA with the planted
  block (``stages.features.similarity``), ``MODEL_ERROR = 0.1`` moved the coverage from 0.58 to
  0.85 when fitted with EfficientNet-Lite0 (sets 6.0 -> 9.8 of 17 layers) and from 0.73 to 0.95
  with DINOv2-small (4.9 -> 7.7 of 12), while with MobileNetV2 itself it went from 0.87 to 0.96
  (3.7 -> 6.1 of 19) (``bench/mismatch.py``). The resampling-only set's size is kept beside it
  (``layer_set_size_sampling``), so a reader sees how much of a set is model error. Without a
  noise ceiling the allowance is zero and the sets are the resampling sets.
* **Confidence** of a layer: the fraction of replicates in which it has the smallest
  error (bootstrap selection frequency, 0..1). A fit reports it for the layer its map shows.

Assumptions: images are exchangeable (independent draws of one distribution); the
penalty chosen per vertex and layer is held fixed (its selection is not resampled); the
residuals are those of the fit on all training images. Cost: the feature-space form's
residuals need each training image's features once more, taken from the pooled features
the layer scores hold in memory (one more store pass per group of layers only where those
do not fit; ``stages.fit.layer_scores``); the image-kernel form keeps its exact leave-one-out
residuals from the solve; plus ``n_resamples x n_images x n_vertices`` multiply-adds per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Bootstrap replicates of the per-layer errors (memory: replicates x layers x vertices float32).
N_RESAMPLES = 100
#: Coverage level of the layer set.
LEVEL = 0.9
#: Share of the best layer's error above the noise floor allowed to any layer's deficit (see the module docs).
MODEL_ERROR = 0.1
#: Vertices handled at once when turning the sums into sets (bounds (replicates, layers, block) temporaries).
VERTEX_BLOCK = 4096


@dataclass(frozen=True)
class LayerSets:
    """Per vertex, the layers not distinguishably worse than the best, and how often each is best.

    Attributes:
        in_set: bool array of shape (n_vertices, n_layers), the ``level`` layer set with the
            model-error allowance.
        best_frequency: float32 array of shape (n_vertices, n_layers), the fraction of
            bootstrap replicates in which each layer has the smallest error (rows sum to 1).
        level: the set's nominal coverage.
        n_resamples: bootstrap replicates behind it.
        sampling_size: int32 array of shape (n_vertices,), the set's size from resampling alone.
        model_error: the allowance's weight (0 where no noise ceiling was known).
    """

    in_set: np.ndarray
    best_frequency: np.ndarray
    level: float
    n_resamples: int
    sampling_size: np.ndarray
    model_error: float

    def columns(self, shown_layer: np.ndarray) -> dict[str, np.ndarray]:
        """The fit-table columns for a map showing ``shown_layer`` (int array of shape (n_vertices,)).

        ``layer_confidence`` (float32, the selection frequency of the shown layer),
        ``layer_set_size`` (int32), ``layer_set_size_sampling`` (int32, from resampling alone),
        ``layer_shown_in_set`` (bool: the shown layer is in the set) and one bool
        ``layer_in_set_XX`` per layer.
        """
        rows = np.arange(len(shown_layer))
        shown = np.asarray(shown_layer, dtype=np.int64)
        columns = {"layer_confidence": self.best_frequency[rows, shown].astype(np.float32),
                   "layer_set_size": self.in_set.sum(axis=1).astype(np.int32),
                   "layer_set_size_sampling": np.asarray(self.sampling_size, dtype=np.int32),
                   "layer_shown_in_set": self.in_set[rows, shown]}
        columns.update({in_set_column(layer): self.in_set[:, layer] for layer in range(self.in_set.shape[1])})
        return columns

    def to_json(self) -> dict:
        """A JSON-safe record (checkpoints): each vertex's set as a bit mask, frequencies rounded to 1e-4."""
        masks = (self.in_set.astype(np.int64) << np.arange(self.in_set.shape[1], dtype=np.int64)).sum(axis=1) \
            if self.in_set.shape[1] < 63 else None
        return {"level": self.level, "n_resamples": self.n_resamples, "model_error": self.model_error,
                "sampling_size": self.sampling_size.tolist(),
                "in_set": masks.tolist() if masks is not None else self.in_set.tolist(),
                "best_frequency": np.round(self.best_frequency, 4).tolist()}

    @classmethod
    def from_json(cls, record: dict) -> "LayerSets":
        """Inverse of :meth:`to_json`."""
        frequency = np.asarray(record["best_frequency"], dtype=np.float32)
        raw = np.asarray(record["in_set"])
        in_set = raw.astype(bool) if raw.ndim == 2 else \
            (raw[:, None] >> np.arange(frequency.shape[1])[None, :]) & 1 == 1
        return cls(in_set=in_set, best_frequency=frequency, level=float(record["level"]),
                   n_resamples=int(record["n_resamples"]), model_error=float(record.get("model_error", 0.0)),
                   sampling_size=np.asarray(record.get("sampling_size", in_set.sum(axis=1)), dtype=np.int32))


def noise_floor(variance: np.ndarray, noise_ceiling: np.ndarray | None) -> np.ndarray | None:
    """The error no model can go below, ``(1 - noise ceiling) x variance`` per vertex (None without a ceiling).

    Args:
        variance: array of shape (n_vertices,), the responses' variance over the training images.
        noise_ceiling: array of shape (n_vertices,) in 0..1, or None.
    """
    if noise_ceiling is None:
        return None
    return (1.0 - np.asarray(noise_ceiling, dtype=np.float64)) * np.asarray(variance, dtype=np.float64)


def in_set_column(layer: int) -> str:
    """Name of the per-vertex bool column saying whether ``layer`` is in the layer set."""
    return f"layer_in_set_{layer:02d}"


class LayerBootstrap:
    """Accumulates Poisson-bootstrap sums of per-image squared errors, per layer and vertex.

    Replicate 0 has every weight 1 (the plain sums); replicates 1..n_resamples have
    seeded Poisson(1) weights per training image, fixed by the image's training row, so
    batches may arrive in any order and any grouping.

    Args:
        n_train: training images (rows of the weight table).
        n_layers, n_vertices: shape of the sums.
        n_resamples: bootstrap replicates.
        seed: seeds the weights.
        device: where the sums live.
    """

    def __init__(self, n_train: int, n_layers: int, n_vertices: int, *, n_resamples: int = N_RESAMPLES,
                 seed: int = 0, device: torch.device = torch.device("cpu")) -> None:
        draws = np.random.default_rng(seed).poisson(1.0, size=(n_resamples, n_train))
        self.weights = torch.as_tensor(np.concatenate([np.ones((1, n_train)), draws]), dtype=torch.float32,
                                       device=device)                                      # (1 + B, n_train)
        self.sums = torch.zeros(n_resamples + 1, n_layers, n_vertices, dtype=torch.float32, device=device)
        self.n_resamples = n_resamples

    @staticmethod
    def nbytes(n_train: int, n_layers: int, n_vertices: int, n_resamples: int = N_RESAMPLES) -> int:
        """Bytes the accumulator holds."""
        return 4 * (n_resamples + 1) * (n_train + n_layers * n_vertices)

    def add(self, layer: int, positions: torch.Tensor, squared_errors: torch.Tensor,
            columns: torch.Tensor | None = None) -> None:
        """Add a batch of ``layer``'s squared errors of the training rows ``positions`` (b,): shape (b, n_vertices),
        or (b, len(columns)) for the vertices ``columns`` (int64, distinct) only."""
        weights = self.weights[:, positions]
        if columns is None:
            self.sums[:, layer].addmm_(weights, squared_errors.float())
        else:
            self.sums[:, layer].index_add_(1, columns, weights @ squared_errors.float())

    def sets(self, *, level: float = LEVEL, noise_floor: np.ndarray | None = None,
             model_error: float = MODEL_ERROR) -> LayerSets:
        """The ``level`` layer sets and selection frequencies (see the module docs).

        Args:
            noise_floor: array of shape (n_vertices,), the error no model can go below on these
                responses, ``(1 - noise ceiling) x variance`` over the training images; None
                when the ceiling is unknown (no model-error allowance then).
            model_error: weight of the allowance.
        """
        return layer_sets(self.sums[0] / self.weights[0].sum(),
                          self.sums[1:] / self.weights[1:].sum(dim=1)[:, None, None], level=level,
                          noise_floor=noise_floor, model_error=model_error)


def layer_sets(errors: torch.Tensor, replicates: torch.Tensor, *, level: float = LEVEL,
               noise_floor: np.ndarray | None = None, model_error: float = MODEL_ERROR) -> LayerSets:
    """Layer sets from mean errors and their bootstrap replicates.

    Args:
        errors: tensor of shape (n_layers, n_vertices), each layer's mean squared error.
        replicates: tensor of shape (n_resamples, n_layers, n_vertices), the same per replicate.
        level: nominal coverage of the set, in (0, 1).
        noise_floor: array of shape (n_vertices,), the lowest reachable error, or None.
        model_error: weight of the model-error allowance (ignored without ``noise_floor``).

    Returns:
        the sets (layer ``l`` kept when its deficit ``L_l - L_h`` against the best layer ``h`` is at most
        the ``level`` quantile of the centred replicate deficits plus ``model_error x (L_h - floor)``)
        and selection frequencies.
    """
    n_resamples, n_layers, n_vertices = replicates.shape
    weight = float(model_error) if noise_floor is not None else 0.0
    floor = torch.as_tensor(np.zeros(n_vertices) if noise_floor is None else noise_floor, dtype=torch.float64,
                            device=errors.device)
    in_set = np.zeros((n_vertices, n_layers), dtype=bool)
    sampling_size = np.zeros(n_vertices, dtype=np.int32)
    frequency = np.zeros((n_vertices, n_layers), dtype=np.float32)
    for start in range(0, n_vertices, VERTEX_BLOCK):
        block = slice(start, start + VERTEX_BLOCK)
        full, boot = errors[:, block].double(), replicates[:, :, block].double()
        best = full.argmin(dim=0, keepdim=True)                                                # (1, v)
        deficit = full - full.gather(0, best)                                                  # (L, v)
        centred = boot - full[None]
        chance = torch.quantile(centred - centred.gather(1, best[None].expand(n_resamples, 1, -1)), level, dim=0)
        allowance = weight * (full.gather(0, best)[0] - floor[block]).clamp_min(0.0)               # (v,)
        in_set[block] = (deficit <= chance + allowance).T.cpu().numpy()
        sampling_size[block] = (deficit <= chance).sum(dim=0).cpu().numpy()
        winners = boot.argmin(dim=1)                                                           # (B, v)
        counts = torch.zeros(n_layers, winners.shape[1], dtype=torch.float64, device=winners.device)
        counts.scatter_add_(0, winners, torch.ones_like(winners, dtype=torch.float64))
        frequency[block] = (counts / n_resamples).T.cpu().numpy()
    return LayerSets(in_set=in_set, best_frequency=frequency, level=level, n_resamples=n_resamples,
                     sampling_size=sampling_size, model_error=weight)
