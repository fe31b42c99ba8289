"""Ridge baselines on the same splits and metrics as FactorTopy: per-layer ridge and banded ridge.

``method="ridge"``: for every layer and every feature set (``"global"``: the layer's
global token; ``"local"``: its local tokens average-pooled to ``local_pool x local_pool``
and flattened, which keeps coarse position), a ridge regression to every vertex with a
per-vertex alpha chosen by exact leave-one-out cross-validation on the training images
(:mod:`stages.fit.ridge_solver`). Each vertex keeps the (layer, feature set) with the
best leave-one-out R^2; that model predicts validation and test images.

``method="banded-ridge"``: one ridge over all layers at once, each layer a band of
features scaled by its own weight ``gamma_l`` (``sum gamma = 1``); per vertex the band
weights and alpha with the best leave-one-out error are chosen from a seeded random
search (every one-hot, the uniform weighting and ``banded_samples`` Dirichlet draws) —
the classic per-vertex feature-space weighting.

Columns of the :class:`~stages.fit.result.FitResult` (ridge has no sample point and no
local/global mix, so some columns are stand-ins):

* layer weights — ridge: ``softmax(R^2_l / layer_temperature)`` of each layer's best
  leave-one-out R^2, so the argmax is the best layer and the entropy says how clearly it
  beats its neighbours (R^2 differences of a few hundredths are decisive; a plain
  normalisation of the scores would make every vertex look undecided); banded ridge: the
  chosen band weights.
* ``space_x``, ``space_y`` — NaN.
* ``scale`` — ridge: 1 where the global token won, 0 where the pooled local tokens did;
  banded ridge: 1 for ``banded_features="global"``, 0 for ``"local"``, NaN for ``"both"``.
* ``ridge_alpha`` (chosen alpha), ``cv_r2`` (its leave-one-out R^2 on the training images).

Features are z-scored per column with training statistics and divided by the square
root of their number, so every band's kernel has mean diagonal ~1 and one alpha grid
suits every layer (:mod:`stages.fit.ridge_features`, shared with prediction).

The result is a :class:`~stages.fit.coefficients.RidgeFit`: it also keeps each vertex's
read-out in the feature space of its chosen model (weights, intercept, the features'
normalisation), grouped by the blocks it reads, so the fit predicts new images
(:mod:`stages.fit.coefficients`, :mod:`stages.fit.ridge_predictor`). Only the current best
candidate's weights of each vertex are held while the candidates are tried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cache.errors import ConfigError
from cache.jsondata import to_json_data
from cache.provenance import environment_record
from cache.store import FeatureStore
from stages.device import resolve_device
from stages.fit.coefficients import Block, ReadoutGroup, RidgeCoefficients, RidgeFit
from stages.fit.config import check_float
from stages.fit.inputs import check_inputs, store_model_id
from stages.fit.outputs import score_columns, score_replicates, score_summary, vertex_columns
from stages.fit.ridge_features import FEATURE_SETS, Normalisation, batch_features
from stages.fit.ridge_solver import (
    KernelSpectrum, choose_alphas, loo_errors, loo_residuals, predict, spectrum_from_features, spectrum_from_kernel,
)
from stages.fit.layer_confidence import MODEL_ERROR, N_RESAMPLES, LayerBootstrap, noise_floor
from stages.subject import Subject

METHODS = ("ridge", "banded-ridge")
EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class RidgeConfig:
    """Settings of the ridge baselines.

    Attributes:
        method: ``"ridge"`` (per layer, best layer per vertex) or ``"banded-ridge"``.
        layers: store layer names to use; ``None`` = every layer.
        grid: stored local grid to read; ``None`` = the store's default.
        feature_sets: per-layer ridge candidates, subset of ``("global", "local")``.
        local_pool: side of the average-pooled local grid (2 -> 4 positions x C_l features).
        alphas: penalty grid (on the normalised kernel scale, see module docs).
        banded_features: features of each band: ``"global"``, ``"local"`` or ``"both"``.
        banded_samples: Dirichlet draws of band weights besides the one-hots and the uniform.
        layer_temperature: softmax temperature (R^2 units) turning per-layer scores into layer weights.
        layer_resamples: ``method="ridge"``: bootstrap replicates of the per-layer leave-one-out
            errors behind each vertex's 90 % layer set and layer confidence
            (``stages.fit.layer_confidence``); 0 = none.
        layer_model_error: weight of the layer sets' allowance for model error (as ``FitConfig``'s).
        seed: seeds the band-weight draws.
        batch_size: images per read from the store.
        device: where the solver runs (``stages.device``): ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
    """

    method: str = "ridge"
    layers: tuple[str, ...] | None = None
    grid: int | None = None
    feature_sets: tuple[str, ...] = FEATURE_SETS
    local_pool: int = 2
    alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 5, 8))
    banded_features: str = "both"
    banded_samples: int = 20
    layer_temperature: float = 0.02
    layer_resamples: int = N_RESAMPLES
    layer_model_error: float = MODEL_ERROR
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if not self.feature_sets or any(name not in FEATURE_SETS for name in self.feature_sets):
            raise ConfigError(f"feature_sets {self.feature_sets!r} must be a non-empty subset of {FEATURE_SETS}")
        if self.banded_features not in FEATURE_SETS + ("both",):
            raise ConfigError(f"banded_features {self.banded_features!r} must be global, local or both")
        if not self.alphas:
            raise ConfigError("alphas is empty: give a non-empty list of positive numbers")
        for alpha in self.alphas:
            check_float("alphas", alpha, 0.0, closed=False)
        check_float("layer_temperature", self.layer_temperature, 0.0, closed=False)
        check_float("layer_model_error", self.layer_model_error, 0.0, closed=True)
        for name in ("local_pool", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.layer_resamples < 0:
            raise ConfigError(f"layer_resamples must be >= 0, got {self.layer_resamples}")
        if self.banded_samples < 0:
            raise ConfigError(f"banded_samples must be >= 0, got {self.banded_samples}")


#: A candidate's read-out weights for some of its vertices: (vertex columns, alphas) -> float32 (n_columns, n_features).
Readout = Callable[[torch.Tensor, torch.Tensor], np.ndarray]
#: Vertices whose read-out weights are computed at once (bounds the float64 temporaries).
WEIGHT_CHUNK = 4096


@dataclass
class _Best:
    """Running per-vertex best candidate: its score, alpha, index, held-out predictions and read-out weights.

    ``weights[c]`` = (vertices, float32 weights of shape (n, n_features)) of the vertices candidate ``c``
    currently wins; a vertex won by a later candidate leaves its earlier group, so only one weight row per vertex
    is ever held. ``blocks[c]`` are the feature blocks candidate ``c`` reads.
    """

    score: np.ndarray
    alpha: np.ndarray
    candidate: np.ndarray
    predictions: dict[str, np.ndarray]
    weights: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    blocks: dict[int, tuple[Block, ...]] = field(default_factory=dict)

    @classmethod
    def empty(cls, n_vertices: int, eval_sizes: dict[str, int]) -> "_Best":
        return cls(score=np.full(n_vertices, -np.inf), alpha=np.full(n_vertices, np.nan),
                   candidate=np.full(n_vertices, -1), predictions={name: np.zeros((size, n_vertices))
                                                                    for name, size in eval_sizes.items()})

    def update(self, index: int, score: np.ndarray, alpha: torch.Tensor, spectrum: KernelSpectrum,
               cross: dict[str, torch.Tensor], targets: torch.Tensor, target_mean: np.ndarray, *,
               blocks: tuple[Block, ...], readout: Readout) -> None:
        better = score > self.score
        if not better.any():
            return
        for previous in np.unique(self.candidate[better]):
            if previous in self.weights:
                vertices, weights = self.weights[previous]
                keep = ~better[vertices]
                self.weights[previous] = (vertices[keep], weights[keep])
        self.score[better], self.alpha[better] = score[better], alpha.cpu().numpy()[better]
        self.candidate[better] = index
        columns = torch.as_tensor(np.nonzero(better)[0], device=targets.device)
        for name, projected in cross.items():
            values = predict(spectrum, projected, targets[:, columns], alpha[columns]).cpu().numpy()
            self.predictions[name][:, better] = values + target_mean[better]
        self.weights[index] = (np.nonzero(better)[0], readout(columns, alpha[columns]))
        self.blocks[index] = blocks

    def coefficients(self, *, grid: int, local_pool: int, intercept: np.ndarray,
                     normalisations: dict[Block, Normalisation]) -> RidgeCoefficients:
        """The winners' read-outs, one group per distinct set of blocks read (see ``stages.fit.coefficients``)."""
        by_blocks: dict[tuple[Block, ...], list[tuple[np.ndarray, np.ndarray]]] = {}
        for index, (vertices, weights) in sorted(self.weights.items()):
            if len(vertices):
                by_blocks.setdefault(self.blocks[index], []).append((vertices, weights))
        groups = tuple(ReadoutGroup(vertices=np.concatenate([v for v, _ in parts]), blocks=blocks,
                                    weights=np.concatenate([w for _, w in parts]))
                       for blocks, parts in by_blocks.items())
        used = {block for group in groups for block in group.blocks}
        return RidgeCoefficients(grid=grid, local_pool=local_pool, intercept=np.asarray(intercept, np.float64),
                                 normalisations={block: norm for block, norm in normalisations.items()
                                                 if block in used}, groups=groups)


def _chunked(compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Readout:
    """A :data:`Readout` from ``compute(columns, alphas) -> (n_features, n_columns)``, run :data:`WEIGHT_CHUNK`
    vertices at a time and returned as float32 rows."""
    def readout(columns: torch.Tensor, alphas: torch.Tensor) -> np.ndarray:
        parts = [compute(columns[start:start + WEIGHT_CHUNK], alphas[start:start + WEIGHT_CHUNK]).T.float().cpu()
                 for start in range(0, len(columns), WEIGHT_CHUNK)]
        return torch.cat(parts).numpy()
    return readout


def fit_ridge(store: FeatureStore, subject: Subject, cfg: RidgeConfig) -> RidgeFit:
    """Fit a ridge baseline (``cfg.method``) to ``subject`` from ``store``; see the module docs.

    Raises:
        StoreMismatchError, InvalidInputError, IncompleteStoreError: bad layers, grid,
            responses, split sizes or missing images, before any fitting.
    """
    grid = cfg.grid if cfg.grid is not None else (8 if 8 in store.grids else min(store.grids))
    layer_indices = check_inputs(store, subject, layers=cfg.layers, grid=grid, min_train=2)
    return _fit(store, subject, cfg, layer_indices=layer_indices, grid=grid, device=resolve_device(cfg.device))


def _fit(store: FeatureStore, subject: Subject, cfg: RidgeConfig, *, layer_indices: Sequence[int],
         grid: int, device: torch.device) -> RidgeFit:
    """``cfg.method`` fitted on checked inputs: the store ``layer_indices`` at ``grid``, solved on ``device``."""
    method = cfg.method
    features, normalisations = _features(store, subject, layer_indices=layer_indices, grid=grid,
                                         local_pool=cfg.local_pool, batch_size=cfg.batch_size)
    layer_names = tuple(store.layer_names[i] for i in layer_indices)
    features = {name: [block.to(device) for block in blocks] for name, blocks in features.items()}
    train = subject.splits["train"]
    evals = {name: subject.splits[name] for name in EVAL_SPLITS if len(subject.splits.get(name, ())) > 0}
    responses = np.asarray(subject.responses, dtype=np.float64)
    target_mean = responses[train].mean(axis=0)
    targets = torch.as_tensor(responses[train] - target_mean, device=device)
    variance = np.maximum(targets.var(dim=0, unbiased=False).cpu().numpy(), 1e-300)
    alphas = torch.tensor(cfg.alphas, dtype=torch.float64, device=device)
    best = _Best.empty(subject.n_vertices, {name: len(rows) for name, rows in evals.items()})
    n_layers = len(layer_names)

    def consider(index: int, spectrum: KernelSpectrum, cross: dict[str, torch.Tensor], blocks: tuple[Block, ...],
                 readout: Readout) -> tuple[np.ndarray, torch.Tensor]:
        alpha, error = choose_alphas(loo_errors(spectrum, targets, alphas), alphas)
        score = 1.0 - error.cpu().numpy() / variance
        best.update(index, score, alpha, spectrum, cross, targets, target_mean, blocks=blocks, readout=readout)
        return score, alpha

    extra: dict[str, np.ndarray] = {}
    if method == "ridge":
        scores = np.full((len(cfg.feature_sets), n_layers, subject.n_vertices), -np.inf)
        bootstrap = (LayerBootstrap(len(train), n_layers, subject.n_vertices, n_resamples=cfg.layer_resamples,
                                    seed=cfg.seed, device=device) if cfg.layer_resamples > 0 else None)
        train_rows = torch.arange(len(train), device=device)
        for layer in range(n_layers):
            squared = None
            for set_index, name in enumerate(cfg.feature_sets):
                block = features[name][layer].double()
                spectrum, projection = spectrum_from_features(block[train])
                cross = {split: block[rows] @ projection for split, rows in evals.items()}
                primal = _chunked(lambda columns, alpha, spectrum=spectrum, projection=projection:
                                  predict(spectrum, projection, targets[:, columns], alpha))
                score, alpha = consider(set_index * n_layers + layer, spectrum, cross, ((name, layer),), primal)
                if bootstrap is not None:   # each vertex's errors from the feature set that scores best there
                    these = loo_residuals(spectrum, targets, alpha) ** 2
                    wins = torch.as_tensor(score > scores[:, layer].max(axis=0), device=device)
                    squared = these if squared is None else torch.where(wins, these, squared)
                scores[set_index, layer] = score
            if bootstrap is not None:
                bootstrap.add(layer, train_rows, squared)
        per_layer = scores.max(axis=0).T                                             # (n_vertices, n_layers)
        weights = score_targets(per_layer, temperature=cfg.layer_temperature)
        chosen_set = np.asarray(cfg.feature_sets)[best.candidate // n_layers]
        scale = (chosen_set == "global").astype(np.float32)
        for layer in range(n_layers):
            extra[f"cv_r2_layer_{layer:02d}"] = per_layer[:, layer].astype(np.float32)
        if bootstrap is not None:
            floor = noise_floor(variance, subject.noise_ceiling)
            extra.update(bootstrap.sets(noise_floor=floor, model_error=cfg.layer_model_error)
                         .columns(per_layer.argmax(axis=1)))
    else:
        bands = [_band(features, layer, cfg) for layer in range(n_layers)]
        kernels = [band[train] @ band[train].T for band in bands]
        crosses = {split: [band[rows] @ band[train].T for band in bands] for split, rows in evals.items()}
        gammas = _band_weights(n_layers, cfg.banded_samples, cfg.seed)
        for index, gamma in enumerate(gammas):
            spectrum = spectrum_from_kernel(sum(g * k for g, k in zip(gamma.tolist(), kernels)))
            cross = {split: sum(g * k for g, k in zip(gamma.tolist(), blocks)) @ spectrum.basis
                     for split, blocks in crosses.items()}
            read = [layer for layer, g in enumerate(gamma.tolist()) if g > 0]
            consider(index, spectrum, cross, tuple(block for layer in read for block in _band_blocks(layer, cfg)),
                     _chunked(_banded_primal(spectrum, [bands[layer] for layer in read],
                                             [float(gamma[layer]) * _band_factor(cfg) for layer in read], train,
                                             targets)))
        weights = gammas[best.candidate].numpy()
        scale = np.full(subject.n_vertices, {"global": 1.0, "local": 0.0, "both": np.nan}[cfg.banded_features],
                        dtype=np.float32)
    coefficients = best.coefficients(grid=grid, local_pool=cfg.local_pool, intercept=target_mean,
                                     normalisations=normalisations)
    return _result(store, subject, cfg, method, layer_names, weights, scale, best, extra, evals, coefficients)


def _features(store: FeatureStore, subject: Subject, *, layer_indices: Sequence[int], grid: int, local_pool: int,
              batch_size: int) -> tuple[dict[str, list[torch.Tensor]], dict[Block, Normalisation]]:
    """Normalised features per set and layer, tensors of shape (n_images, n_features_l) in subject row order, and
    each block's normalisation (``stages.fit.ridge_features``), keyed by (set, layer position)."""
    blocks: dict[str, list[list[torch.Tensor]]] = {name: [[] for _ in layer_indices] for name in FEATURE_SETS}
    order = []
    for batch in store.iter_batches(list(subject.stimulus_ids), batch_size=batch_size, grid=grid):
        order.append(batch.positions)
        for name, per_layer in batch_features(batch, layer_indices, local_pool=local_pool).items():
            for slot, values in enumerate(per_layer):
                blocks[name][slot].append(values)
    inverse = np.argsort(np.concatenate(order))
    train = subject.splits["train"]
    features: dict[str, list[torch.Tensor]] = {name: [] for name in FEATURE_SETS}
    normalisations = {}
    for name, per_layer in blocks.items():
        for slot, parts in enumerate(per_layer):
            block = torch.cat(parts)[inverse]
            normalisations[(name, slot)] = Normalisation.learn(block, train)
            features[name].append(normalisations[(name, slot)].apply(block))
    return features, normalisations


def _band(features: dict[str, list[torch.Tensor]], layer: int, cfg: RidgeConfig) -> torch.Tensor:
    """One layer's band of features, float64 (n_images, n_features): its blocks side by side, times the band factor."""
    blocks = [features[name][layer] for name, _ in _band_blocks(layer, cfg)]
    return torch.cat(blocks, dim=1).double() * _band_factor(cfg)


def _banded_primal(spectrum: KernelSpectrum, bands: Sequence[torch.Tensor], scales: Sequence[float],
                   train: np.ndarray, targets: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``compute(columns, alphas)`` for :func:`_chunked`: a banded candidate's weights on the normalised features,
    shape (n_features, n_columns): the dual coefficients ``c`` once, then ``scale_l * band_l[train]^T c`` for each
    band it reads (``scale_l``: the band weight times the band factor), stacked in order."""
    def compute(columns: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        dual = predict(spectrum, spectrum.basis, targets[:, columns], alphas)           # (n_train, n_columns)
        return torch.cat([scale * (band[train].T @ dual) for band, scale in zip(bands, scales)])
    return compute


def _band_blocks(layer: int, cfg: RidgeConfig) -> tuple[Block, ...]:
    """The feature blocks of one layer's band, in the band's column order."""
    return (("global", layer), ("local", layer)) if cfg.banded_features == "both" else ((cfg.banded_features, layer),)


def _band_factor(cfg: RidgeConfig) -> float:
    """What :func:`_band` multiplies the normalised features by (folded into the stored weights)."""
    return 1.0 / np.sqrt(2.0) if cfg.banded_features == "both" else 1.0


def _band_weights(n_layers: int, n_samples: int, seed: int) -> torch.Tensor:
    """Candidate band weights, shape (n_layers + 1 + n_samples, n_layers): one-hots, uniform, Dirichlet(1) draws."""
    draws = np.random.default_rng(seed).dirichlet(np.ones(n_layers), size=n_samples)
    rows = np.concatenate([np.eye(n_layers), np.full((1, n_layers), 1.0 / n_layers), draws])
    return torch.as_tensor(rows, dtype=torch.float64)


def score_targets(scores: np.ndarray, *, temperature: float) -> np.ndarray:
    """Target layer weights ``softmax(scores / temperature)`` per vertex.

    Args:
        scores: array of shape (n_vertices, n_layers), e.g. held-out R^2 of a ridge per layer.
        temperature: in score units; small values give nearly one-hot targets.

    Returns:
        float32 array of shape (n_vertices, n_layers), rows summing to 1.
    """
    logits = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _result(store: FeatureStore, subject: Subject, cfg: RidgeConfig, method: str, layer_names: tuple[str, ...],
            weights: np.ndarray, scale: np.ndarray, best: _Best, extra: dict[str, np.ndarray],
            evals: dict[str, np.ndarray], coefficients: RidgeCoefficients) -> RidgeFit:
    responses = np.asarray(subject.responses, dtype=np.float64)
    vertices = vertex_columns(subject, weights)
    nan = np.full(subject.n_vertices, np.nan, dtype=np.float32)
    vertices.update({"space_x": nan, "space_y": nan.copy(), "scale": scale.astype(np.float32),
                     "ridge_alpha": best.alpha.astype(np.float32), "cv_r2": best.score.astype(np.float32)})
    vertices.update(extra)
    held_out = {name: responses[rows] for name, rows in evals.items()}
    scores = score_columns(best.predictions, held_out, subject.noise_ceiling)
    vertices.update(scores)
    metrics = {**score_summary(scores), "mean_cv_r2": float(np.mean(best.score)),
               "split_sizes": {name: int(len(rows)) for name, rows in subject.splits.items()}}
    provenance = {"environment": environment_record(),
                  "store": {"path": str(store.path), "provenance": store.provenance},
                  "subject": {"name": subject.name, "source": dict(subject.source), "split_seed": subject.split_seed,
                              "n_images": subject.n_images, "n_vertices": subject.n_vertices, "mesh": subject.mesh},
                  "seed": cfg.seed}
    return RidgeFit(method=method, subject=subject.name, model=store_model_id(store), layer_names=layer_names,
                    vertices=vertices, metrics=metrics, config=to_json_data(cfg), provenance=provenance,
                    replicates=score_replicates(best.predictions, held_out, seed=cfg.seed), coefficients=coefficients)
