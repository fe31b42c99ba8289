"""Train FactorTopy on one subject from a feature store: the stage-two loop.

``fit_factortopy`` checks every input before any training (store coverage, layer
lists, NaN, split sizes), z-scores responses with training statistics, trains with
AdamW (separate selector learning rate), the fading entropy/scale prior, gradient
clipping and mixed precision on GPU, evaluates validation R^2 after every epoch for
early stopping, checkpoints every epoch (resuming from the last one when the
folder already holds a compatible checkpoint) and returns the best epoch's model
as a :class:`~stages.fit.result.FitResult`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cache.errors import InvalidInputError, StoreMismatchError
from cache.provenance import hash_strings
from cache.store import FeatureStore
from stages.fit.checkpoint import TrainState, has_checkpoint, restore_checkpoint, save_checkpoint
from stages.fit.config import FitConfig, config_record
from stages.fit.factortopy import FactorTopy
from stages.fit.metrics import r2_score
from stages.fit.objective import prior_weight, regression_loss, smoothness_penalty
from stages.fit.outputs import build_fit_result
from stages.fit.result import FitResult
from stages.fit.streaming import feature_scales, open_features
from stages.fit.warmstart import warm_start
from stages.subject import Subject

#: Config keys that may change between a fit and its resumption (they do not change the result).
RESUMABLE_KEYS = ("epochs", "patience", "device", "prefetch", "eval_batch_size")


@dataclass(frozen=True)
class Standardisation:
    """Per-vertex training statistics used to z-score responses (recorded in every fit).

    Attributes:
        mean, std: float32 arrays of shape (n_vertices,).
    """

    mean: np.ndarray
    std: np.ndarray

    def apply(self, responses: np.ndarray) -> np.ndarray:
        """Responses of shape (n_images, n_vertices) in training z-units."""
        return ((responses - self.mean) / self.std).astype(np.float32)


def fit_factortopy(store: FeatureStore, subject: Subject, cfg: FitConfig, *, checkpoint_dir: Path | None,
                   progress: bool = True, neighbours: np.ndarray | None = None) -> FitResult:
    """Fit FactorTopy to ``subject`` from ``store``'s features.

    Args:
        store: feature store holding every stimulus of the subject.
        subject: responses, geometry and the recorded train/val/test split.
        cfg: training settings (see :class:`~stages.fit.config.FitConfig`).
        checkpoint_dir: folder for per-epoch checkpoints; an existing compatible checkpoint
            there is resumed. ``None`` = no checkpoints.
        progress: show a progress bar.
        neighbours: int64 array of shape (n_edges, 2) of neighbouring vertex pairs, for
            ``cfg.smoothness_weight``.

    Returns:
        the fit's per-vertex selections and validation/test scores, with config and provenance.
    """
    layer_indices = check_inputs(store, subject, cfg, neighbours=neighbours)
    layer_names = tuple(store.layer_names[i] for i in layer_indices)
    device = resolve_device(cfg.device)
    standard = standardise(subject.responses, subject.splits["train"])
    targets = standard.apply(subject.responses)
    scales = (feature_scales(store, subject.stimulus_ids[subject.splits["train"]], layer_indices=layer_indices,
                             grid=cfg.grid) if cfg.normalise_layers else None)
    sources = {name: open_features(store, subject.stimulus_ids[rows], targets[rows], layer_indices=layer_indices,
                                   grid=cfg.grid, device=device, resident=cfg.resident,
                                   shuffle_buffer=cfg.shuffle_buffer, prefetch=cfg.prefetch, scales=scales)
               for name, rows in subject.splits.items() if len(rows)}
    torch.manual_seed(cfg.seed)
    model = FactorTopy(n_channels=[store.n_channels[i] for i in layer_indices], grid=cfg.grid,
                       coords=torch.from_numpy(np.asarray(subject.sphere_coords, dtype=np.float32)),
                       cfg=cfg.model).to(device)
    optimiser = build_optimiser(model, cfg)
    autocast_dtype = autocast_dtype_for(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    identity = fit_identity(store, subject, cfg, layer_names)
    if has_checkpoint(checkpoint_dir):
        state, best = restore_checkpoint(checkpoint_dir, identity=identity, model=model, optimiser=optimiser,
                                         scaler=scaler)
    else:
        state, best = TrainState(), _copy_state(model)
        state.notes = warm_start(model, store, subject, mode=cfg.warm_start, layer_indices=layer_indices, grid=cfg.grid,
                                 temperature=cfg.warm_start_temperature, seed=cfg.seed)
        best = _copy_state(model)
    model.selectors.layer.requires_grad_(cfg.layer_lr != 0)
    edges = None if neighbours is None else torch.as_tensor(neighbours, dtype=torch.long, device=device)
    train = sources["train"]
    steps_per_epoch = math.ceil(train.n_images / cfg.batch_size)
    fade_steps = cfg.fade_steps(steps_per_epoch)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=state.epoch * steps_per_epoch, disable=not progress,
               desc=f"fit {subject.name}", unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    while state.epoch < cfg.epochs and not state.stopped_early:
        row = train_epoch(model, train, optimiser, scaler, state, cfg, autocast_dtype=autocast_dtype,
                          fade_steps=fade_steps, edges=edges, bar=bar)
        row["val_r2"] = float(np.mean(r2_score(predict(model, sources["val"], cfg, autocast_dtype),
                                               sources["val"].targets)))
        state.history.append({**row, **selection_summary(model)})
        if row["val_r2"] > state.best_val_r2:
            state.best_val_r2, state.best_epoch, best = row["val_r2"], state.epoch, _copy_state(model)
        elif state.epoch - state.best_epoch >= cfg.patience:
            state.stopped_early = True
        bar.set_postfix(epoch=state.epoch, loss=f"{row['train_loss']:.4f}", val_r2=f"{row['val_r2']:.4f}")
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, state=state, identity=identity, model=model, best_model=best,
                            optimiser=optimiser, scaler=scaler)
    bar.close()
    model.load_state_dict(best)
    predictions = {name: predict(model, source, cfg, autocast_dtype) for name, source in sources.items()
                   if name in ("val", "test")}
    targets_by_split = {name: sources[name].targets for name in predictions}
    summary = {"epochs_run": state.epoch, "best_epoch": state.best_epoch, "steps": state.step,
               "stopped_early": state.stopped_early, "train_seconds": time.perf_counter() - started,
               "device": str(device), "precision": str(autocast_dtype).replace("torch.", "") if autocast_dtype else "float32",
               "resident": type(train).__name__ == "ResidentFeatures", "fade_steps": fade_steps,
               "feature_scales": scales, **state.notes}
    return build_fit_result(model, subject, store, cfg, layer_names=layer_names, predictions=predictions,
                            targets=targets_by_split, standardisation=standard, history=state.history,
                            summary=summary)


def build_optimiser(model: FactorTopy, cfg: FitConfig) -> torch.optim.AdamW:
    """AdamW with three groups: bottlenecks and read-out (``lr``), layer selector (``layer_lr``),
    space and scale selectors (``selector_lr``); ``layer_lr == 0`` leaves the layer selector out."""
    selector_lr = cfg.selector_lr if cfg.selector_lr is not None else cfg.lr
    layer_lr = cfg.layer_lr if cfg.layer_lr is not None else selector_lr
    layer_ids = {id(p) for p in model.selectors.layer.parameters()}
    others = [p for p in model.selector_parameters() if id(p) not in layer_ids]
    groups = [{"params": list(model.readout_parameters()), "lr": cfg.lr},
              {"params": list(model.selectors.layer.parameters()), "lr": layer_lr},
              {"params": others, "lr": selector_lr}]
    if layer_lr == 0:
        groups.pop(1)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_epoch(model: FactorTopy, train: Any, optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                state: TrainState, cfg: FitConfig, *, autocast_dtype: torch.dtype | None, fade_steps: int,
                edges: torch.Tensor | None, bar: Any) -> dict[str, Any]:
    """One pass over the training images; advances ``state.step`` and ``state.epoch``, returns the epoch's metrics."""
    epoch = state.epoch + 1
    device = next(model.parameters()).device
    model.train()
    tic, seen, loss_sum, prior = time.perf_counter(), 0, 0.0, 0.0
    for batch in train.batches(batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch):
        prior = prior_weight(state.step, weight=cfg.prior_weight, fade_steps=fade_steps)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            prediction = model(batch.local, batch.global_)
        loss = regression_loss(prediction.float(), batch.target, beta=cfg.loss_beta)
        total = loss
        if prior > 0:
            total = total + prior * model.regulariser()
        if cfg.smoothness_weight > 0 and edges is not None:
            total = total + cfg.smoothness_weight * smoothness_penalty(model.selections(), edges)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if cfg.clip_grad_norm is not None:
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        scaler.step(optimiser)
        scaler.update()
        state.step += 1
        seen += len(batch.positions)
        loss_sum += float(loss.detach()) * len(batch.positions)
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.4f}", val_r2=_last(state, "val_r2"),
                        img_s=f"{seen / max(time.perf_counter() - tic, 1e-9):.0f}")
    state.epoch = epoch
    seconds = time.perf_counter() - tic
    return {"epoch": epoch, "step": state.step, "train_loss": loss_sum / max(seen, 1), "prior_weight": prior,
            "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds}


def check_inputs(store: FeatureStore, subject: Subject, cfg: FitConfig, *, neighbours: np.ndarray | None = None
                 ) -> list[int]:
    """Every bad-input case, caught before training; returns the store indices of the chosen layers.

    Raises:
        InvalidInputError: NaN/inf responses, too few images in a split, a missing grid, bad neighbours.
        StoreMismatchError: configured layers absent from the store.
        IncompleteStoreError: the store lacks some of the subject's images (from ``store.rows_for``).
    """
    if cfg.layers is None:
        layer_indices = list(range(store.n_layers))
    else:
        missing = [name for name in cfg.layers if name not in store.layer_names]
        if missing:
            raise StoreMismatchError(
                f"layers {missing} are not in the feature store {store.path}, which has {list(store.layer_names)}; "
                "fix the config's `layers` or leave it unset to use every stored layer")
        layer_indices = [list(store.layer_names).index(name) for name in cfg.layers]
    if cfg.grid not in store.grids:
        raise InvalidInputError(f"grid {cfg.grid} is not stored in {store.path} (it has {list(store.grids)}); "
                                f"set grid to one of those")
    responses = np.asarray(subject.responses)
    bad = ~np.isfinite(responses)
    if bad.any():
        images, vertices = np.nonzero(bad)
        raise InvalidInputError(
            f"subject {subject.name}: responses hold {int(bad.sum())} NaN/inf values in {len(np.unique(vertices))} "
            f"vertices (first at image row {images[0]}, vertex {vertices[0]}); remove or impute them before fitting")
    needs = {"train": max(cfg.batch_size, 2), "val": 2}
    for split, minimum in needs.items():
        n = len(subject.splits.get(split, ()))
        if n < minimum:
            raise InvalidInputError(
                f"subject {subject.name}: the {split} split has {n} images, at least {minimum} are needed "
                f"(batch size {cfg.batch_size}); use more images, a smaller batch size or another split fraction")
    if neighbours is not None:
        edges = np.asarray(neighbours)
        if edges.ndim != 2 or edges.shape[1] != 2 or (edges.size and (edges.min() < 0 or edges.max() >= subject.n_vertices)):
            raise InvalidInputError(f"neighbours must be an int array of shape (n_edges, 2) indexing the "
                                    f"{subject.n_vertices} vertices, got shape {edges.shape}")
    store.rows_for(subject.stimulus_ids)
    return layer_indices


def standardise(responses: np.ndarray, train_rows: np.ndarray) -> Standardisation:
    """Per-vertex mean and standard deviation over the training rows (std 0 -> 1)."""
    train = np.asarray(responses[train_rows], dtype=np.float64)
    std = train.std(axis=0)
    return Standardisation(train.mean(axis=0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))


def predict(model: FactorTopy, source: Any, cfg: FitConfig, autocast_dtype: torch.dtype | None) -> np.ndarray:
    """Predictions of shape (source.n_images, n_vertices), rows in the source's image order."""
    model.eval()
    out = np.zeros(source.targets.shape, dtype=np.float32)
    with torch.no_grad(), torch.autocast(source.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        for batch in source.batches(batch_size=cfg.eval_batch_size, shuffle=False):
            out[batch.positions] = model(batch.local, batch.global_).float().cpu().numpy()
    model.train()
    return out


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; an unavailable CUDA request is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    return device


def autocast_dtype_for(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype on CUDA (``None`` = fp32); the CPU always trains in fp32."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def fit_identity(store: FeatureStore, subject: Subject, cfg: FitConfig, layer_names: tuple[str, ...]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: layers, subject, split, store and config."""
    config = {key: value for key, value in config_record(cfg).items() if key not in RESUMABLE_KEYS}
    splits = {name: hash_strings(map(str, subject.stimulus_ids[rows])) for name, rows in sorted(subject.splits.items())}
    return {"layer_names": list(layer_names), "subject": subject.name, "n_vertices": subject.n_vertices,
            "splits_sha256": splits, "store_images_sha256": hash_strings(map(str, store.image_ids)),
            "config": config}


def selection_summary(model: FactorTopy) -> dict[str, float]:
    """Mean layer entropy and spread of the selections: how far the selectors have moved."""
    from stages.fit.result import layer_summary

    selections = model.selections()
    weights = selections.layer_weights.detach().float().cpu().numpy()
    summary = layer_summary(weights)
    space = selections.space.detach().float().cpu().numpy()
    return {"layer_entropy": float(summary["layer_entropy"].mean()),
            "layer_argmax_distinct": int(len(np.unique(summary["layer_argmax"]))),
            "space_spread": float(space.std(axis=0).mean())}


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _last(state: TrainState, key: str) -> str:
    return f"{state.history[-1][key]:.4f}" if state.history else "-"
