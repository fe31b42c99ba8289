"""Train FactorTopy from a feature store: the stage-two loop, for one subject or several at once.

``fit_factortopy`` fits one subject; ``train_factortopy`` is the loop itself, for one or
several subjects sharing bottlenecks and selectors (each with its own read-out; see
``stages.fit.multisubject``). It checks every input before any training (store
coverage, layer lists, NaN, split sizes), z-scores each subject's responses with its
training statistics, trains with AdamW (separate selector learning rate), the fading
entropy/scale prior, gradient clipping and mixed precision (on GPU; bf16 on the CPU when asked),
each step on a batch of one subject (subjects interleaved in a seeded order, in proportion to their training
images), evaluates validation R^2 after every epoch (averaged over subjects) for early
stopping, checkpoints every epoch (resuming from the last one when the folder already
holds a compatible checkpoint) and keeps the best epoch's model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cache.errors import InvalidInputError
from cache.provenance import hash_strings
from cache.jsondata import to_json_data
from cache.store import FeatureStore
from stages.device import autocast_context, precision_dtype, resolve_device, resolve_precision
from stages.fit.checkpoint import TrainState, has_checkpoint, restore_checkpoint, save_checkpoint
from stages.fit.config import CPU_PRECISIONS, FitConfig
from stages.fit.factortopy import FactorTopy
from stages.fit.inputs import check_inputs, check_stores
from stages.fit.layer_confidence import LayerSets
from stages.fit.metrics import r2_score
from stages.fit.objective import prior_weight, regression_loss, smoothness_penalty
from stages.fit.outputs import TrainedFit, build_fit_result
from stages.fit.result import FitResult
from stages.fit.pooled_features import HeldTokens
from stages.fit.streaming import (
    Batch, ResidentFeatures, feature_scales, open_splits, residency,
)
from stages.fit.targets import Standardisation, StandardisedRows, standardise
from stages.fit.warmstart import warm_start
from stages.resources import PhaseMonitor, release_free_memory
from stages.subject import Subject

#: Config keys that may change between a fit and its resumption (they do not change the result).
RESUMABLE_KEYS = ("epochs", "patience", "device", "prefetch", "eval_batch_size")
#: Host memory one evaluation batch's read-out intermediates may take on the CPU (bytes).
EVAL_BATCH_BYTES = 256 * 2**20


@dataclass
class SubjectPart:
    """One subject's share of a training run.

    Attributes:
        subject, store: the subject and the feature store holding its images.
        standardisation: its training mean/std (targets are z-scored with them).
        sources: split name -> feature source serving its images and z-scored targets.
        edges: int64 tensor of shape (n_edges, 2) of neighbouring vertices, or None.
        layer_sets: the warm start's layer sets for this subject, or None.
        predictions: after training, ``"val"``/``"test"`` -> array of shape (n_images_split, n_vertices).
    """

    subject: Subject
    store: FeatureStore
    standardisation: Standardisation
    sources: dict[str, Any]
    edges: torch.Tensor | None
    layer_sets: LayerSets | None = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class TrainedModel:
    """A trained FactorTopy model (the best epoch's weights loaded) and every subject's part of the run.

    Attributes:
        model: the model, one read-out per subject.
        cfg: the training config.
        layer_names: the store layers the model uses, in order.
        parts: one :class:`SubjectPart` per subject, in the model's subject order.
        history: per-epoch metrics.
        summary: run facts (epochs, timings, device, precision, warm start...).
    """

    model: FactorTopy
    cfg: FitConfig
    layer_names: tuple[str, ...]
    parts: list[SubjectPart]
    history: list[dict[str, Any]]
    summary: dict[str, Any]

    def result(self, index: int = 0) -> TrainedFit:
        """The fit of subject ``index``: its selections, read-out, held-out scores, config and provenance."""
        part = self.parts[index]
        return build_fit_result(self.model, part.subject, part.store, self.cfg, layer_names=self.layer_names,
                                predictions=part.predictions,
                                targets={name: part.sources[name].targets for name in part.predictions},
                                standardisation=part.standardisation, history=self.history, summary=self.summary,
                                subject_index=index, layer_sets=part.layer_sets)


def fit_factortopy(store: FeatureStore, subject: Subject, cfg: FitConfig, *, checkpoint_dir: Path | None,
                   progress: bool = True, neighbours: np.ndarray | None = None,
                   monitor: PhaseMonitor | None = None) -> FitResult:
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
        monitor: records each phase's seconds and peak host memory (a new one when None).

    Returns:
        the fit's per-vertex selections and validation/test scores, with config and provenance.
    """
    return train_factortopy([store], [subject], cfg, checkpoint_dir=checkpoint_dir, progress=progress,
                            neighbours=[neighbours], monitor=monitor).result(0)


def train_factortopy(stores: Sequence[FeatureStore], subjects: Sequence[Subject], cfg: FitConfig, *,
                     checkpoint_dir: Path | None, progress: bool = True,
                     neighbours: Sequence[np.ndarray | None] | None = None,
                     monitor: PhaseMonitor | None = None) -> TrainedModel:
    """Train one FactorTopy model on ``subjects``: shared bottlenecks and selectors, one read-out each.

    Args:
        stores: per subject, the feature store holding its images (same model and layers).
        subjects: one or more subjects; their sphere coordinates must share one space (fsaverage).
        cfg: training settings.
        checkpoint_dir: folder for per-epoch checkpoints (resumed when compatible), or None.
        progress: show a progress bar.
        neighbours: per subject, int64 array of shape (n_edges, 2) of neighbouring vertex
            pairs for ``cfg.smoothness_weight``, or None.
        monitor: an open :class:`~stages.resources.PhaseMonitor` of the caller's run, or None for
            one of this run's own; its record (seconds and peak RSS per phase) goes in the summary.

    Returns:
        the trained model with each subject's standardisation and held-out predictions.
    """
    if monitor is None:
        with PhaseMonitor() as own:
            return train_factortopy(stores, subjects, cfg, checkpoint_dir=checkpoint_dir, progress=progress,
                                    neighbours=neighbours, monitor=own)
    neighbours = [None] * len(subjects) if neighbours is None else list(neighbours)
    monitor.track("store_gb_read", lambda: sum(store.reads.bytes for store in stores) / 1e9)
    if not subjects or not len(stores) == len(subjects) == len(neighbours):
        raise InvalidInputError(f"training needs >= 1 subject and one store and one neighbour set per subject; got "
                                f"{len(subjects)} subjects, {len(stores)} stores, {len(neighbours)} neighbour sets")
    check_stores(stores)
    layer_indices = [check_inputs(store, subject, layers=cfg.layers, grid=cfg.grid, min_train=cfg.batch_size,
                                  neighbours=pairs) for store, subject, pairs in zip(stores, subjects, neighbours)][0]
    layer_names = tuple(stores[0].layer_names[i] for i in layer_indices)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = FactorTopy(n_channels=[stores[0].n_channels[i] for i in layer_indices], grid=cfg.grid,
                       coords=[torch.from_numpy(np.asarray(s.sphere_coords, dtype=np.float32)) for s in subjects],
                       cfg=cfg.model).to(device)
    optimiser = build_optimiser(model, cfg)
    precision = resolve_precision(cfg.precision, device, cpu_autocast=CPU_PRECISIONS)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    identity = fit_identity(stores, subjects, cfg, layer_names)
    resumed = has_checkpoint(checkpoint_dir)
    if resumed:
        state, best = restore_checkpoint(checkpoint_dir, identity=identity, model=model, optimiser=optimiser,
                                         scaler=scaler)
    else:
        state = TrainState()
    # Features held whole are opened first, so the warm start reads them instead of the store; otherwise the warm
    # start runs before the training targets exist, and its statistics and they never share memory.
    held_first = not resumed and cfg.warm_start != "none" and all(
        residency(store, len(subject.splits["train"]), layer_indices=layer_indices, grid=cfg.grid, device=device,
                  resident=cfg.resident)[0] for store, subject in zip(stores, subjects))
    if held_first:
        parts, scales = prepare_parts(stores, subjects, cfg, layer_indices=layer_indices, device=device,
                                      neighbours=neighbours, monitor=monitor)
    if not resumed:
        with monitor.phase("warm_start"):
            sets: list[LayerSets] = []
            tokens = [held_tokens(part.sources["train"]) for part in parts] if held_first else None
            state.notes = warm_start(model, stores, subjects, cfg, layer_indices=layer_indices, device=device,
                                     layer_sets=sets, tokens=tokens)
            state.layer_sets = [item.to_json() for item in sets]
            del tokens
            release_free_memory()
        best = _copy_state(model)
    if not held_first:
        parts, scales = prepare_parts(stores, subjects, cfg, layer_indices=layer_indices, device=device,
                                      neighbours=neighbours, monitor=monitor)
    for part, record in zip(parts, state.layer_sets):
        part.layer_sets = LayerSets.from_json(record)
    train = [part.sources["train"] for part in parts]
    steps_per_epoch = sum(math.ceil(source.n_images / cfg.batch_size) for source in train)
    fade_steps = cfg.fade_steps(steps_per_epoch)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=state.epoch * steps_per_epoch, disable=not progress,
               desc=f"fit {'+'.join(subject.name for subject in subjects)}", unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    while state.epoch < cfg.epochs and not state.stopped_early:
        model.selectors.layer.requires_grad_(layer_selector_trains(cfg, state.epoch))
        with monitor.phase("train"):
            row = train_epoch(model, train, optimiser, scaler, state, cfg, precision=precision,
                              fade_steps=fade_steps, edges=[part.edges for part in parts], bar=bar)
        with monitor.phase("validate"):
            row.update(validation_scores(model, parts, cfg, precision))
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
    release_free_memory()   # the training batches' buffers
    with monitor.phase("predict"):
        for index, part in enumerate(parts):
            part.predictions = {name: predict(model, source, cfg, precision, subject=index)
                                for name, source in part.sources.items() if name in ("val", "test")}
        release_free_memory()
    summary = {"epochs_run": state.epoch, "best_epoch": state.best_epoch, "steps": state.step,
               "stopped_early": state.stopped_early, "train_seconds": time.perf_counter() - started,
               "device": str(device), "precision": str(precision_dtype(precision) or torch.float32).replace("torch.", ""),
               "resident": all(isinstance(source, ResidentFeatures) for source in train),
               "feature_source": [source.choice for source in train],
               "held_out_source": [{name: source.choice for name, source in part.sources.items() if name != "train"}
                                   for part in parts],
               "fade_steps": fade_steps, "feature_scales": scales, "phases": monitor.record(), **state.notes}
    return TrainedModel(model=model, cfg=cfg, layer_names=layer_names, parts=parts, history=state.history,
                        summary=summary)


def prepare_parts(stores: Sequence[FeatureStore], subjects: Sequence[Subject], cfg: FitConfig, *,
                  layer_indices: Sequence[int], device: torch.device, neighbours: Sequence[np.ndarray | None],
                  monitor: PhaseMonitor) -> tuple[list[SubjectPart], list[tuple[float, float]] | None]:
    """Every subject's part of the run (:func:`prepare_subject`) and the shared feature scales, as phase ``prepare``."""
    with monitor.phase("prepare"):
        scales = shared_feature_scales(stores, subjects, layer_indices=layer_indices, grid=cfg.grid) \
            if cfg.normalise_layers else None
        parts = [prepare_subject(store, subject, cfg, layer_indices=layer_indices, device=device, scales=scales,
                                 neighbours=pairs) for store, subject, pairs in zip(stores, subjects, neighbours)]
    return parts, scales


def held_tokens(source: Any) -> HeldTokens | None:
    """The training features a resident source holds, for the warm start; None for a streamed one."""
    return HeldTokens(source.local, source.global_) if isinstance(source, ResidentFeatures) else None


def prepare_subject(store: FeatureStore, subject: Subject, cfg: FitConfig, *, layer_indices: Sequence[int],
                    device: torch.device, scales: Sequence[tuple[float, float]] | None,
                    neighbours: np.ndarray | None) -> SubjectPart:
    """Z-score ``subject``'s responses with its training statistics and open a feature source per split.

    The training split's targets are z-scored batch by batch (:class:`~stages.fit.targets.StandardisedRows`);
    the held-out splits' are materialised (they are small and scored whole). When the training features are held,
    every split's are, read in one pass; else the validation split's (scored every epoch) are held when they fit
    (also with ``cfg.resident="off"``: a tenth of the store at most, and one read instead of one per epoch) and the
    test split is streamed once, at the end (:func:`~stages.fit.streaming.open_splits`)."""
    standard = standardise(subject.responses, subject.splits["train"])
    train = subject.splits["train"]
    splits = {name: (subject.stimulus_ids[rows], StandardisedRows(subject.responses, rows, standard) if name == "train"
                     else standard.apply_rows(subject.responses, rows))
              for name, rows in subject.splits.items() if len(rows)}
    # validation runs every epoch, the test split once: held beside the training features, or alone (when it fits,
    # whatever cfg.resident says of the training features) when they are streamed
    train_held, _ = residency(store, len(train), layer_indices=layer_indices, grid=cfg.grid, device=device,
                              resident=cfg.resident)
    sources = open_splits(store, splits, hold=list(splits) if train_held else ["val"], layer_indices=layer_indices,
                          grid=cfg.grid, device=device, resident=cfg.resident if train_held else "auto",
                          shuffle_buffer=cfg.shuffle_buffer, prefetch=cfg.prefetch, scales=scales)
    edges = None if neighbours is None else torch.as_tensor(neighbours, dtype=torch.long, device=device)
    return SubjectPart(subject=subject, store=store, standardisation=standard, sources=sources, edges=edges)


def shared_feature_scales(stores: Sequence[FeatureStore], subjects: Sequence[Subject], *,
                          layer_indices: Sequence[int], grid: int) -> list[tuple[float, float]]:
    """Per layer, (local, global) unit-RMS factors shared by every subject: the mean over subjects of
    :func:`~stages.fit.streaming.feature_scales` on each subject's training images (the bottlenecks are shared,
    so every subject's features must be scaled alike)."""
    per_subject = [feature_scales(store, subject.stimulus_ids[subject.splits["train"]], layer_indices=layer_indices,
                                  grid=grid) for store, subject in zip(stores, subjects)]
    return [tuple(float(np.mean(values)) for values in zip(*layer)) for layer in zip(*per_subject)]


def interleaved_batches(sources: Sequence[Any], *, batch_size: int, seed: int, epoch: int
                        ) -> Iterator[tuple[int, Batch]]:
    """Every training image of every source once, as (source index, batch).

    Each source's batches come in its own ``(seed, epoch)`` order; the sources take turns
    in a seeded random order holding each source as often as it has batches, so every
    part of the epoch sees the subjects in proportion to their training images.
    """
    streams = [source.batches(batch_size=batch_size, shuffle=True, seed=seed, epoch=epoch) for source in sources]
    turns = np.repeat(np.arange(len(sources)), [math.ceil(source.n_images / batch_size) for source in sources])
    for index in np.random.default_rng([seed, epoch]).permutation(turns):
        batch = next(streams[index], None)
        if batch is not None:
            yield int(index), batch
    for index, stream in enumerate(streams):
        for batch in stream:
            yield index, batch


def build_optimiser(model: FactorTopy, cfg: FitConfig) -> torch.optim.AdamW:
    """AdamW with three groups: bottlenecks and read-outs (``lr``), layer selector (``layer_lr``),
    space and scale selectors (``selector_lr``); ``layer_lr == 0`` leaves the layer selector out.
    With ``cfg.bottleneck_lr_by_width`` each layer's bottlenecks get their own group
    (:func:`bottleneck_groups`).

    With several subjects the selectors' rates are divided by their number. Each step trains one
    subject's read-out but moves the shared selectors, so they take n_subjects steps for each step of
    any one read-out. At the full rate, the scale selector ran ahead of the read-outs and saturated
    at "global" for every vertex within ~40 steps (joint fit of the synthetic subjects 1-3: scale
    rho -0.22 against the planted one). Divided, the selectors move per epoch as in a separate fit
    (rho 0.78 after 3 epochs)."""
    share = 1.0 / model.n_subjects
    selector_lr = (cfg.selector_lr if cfg.selector_lr is not None else cfg.lr) * share
    layer_lr = cfg.layer_lr * share if cfg.layer_lr is not None else selector_lr
    layer_ids = {id(p) for p in model.selectors.layer.parameters()}
    others = [p for p in model.selector_parameters() if id(p) not in layer_ids]
    groups = bottleneck_groups(model, cfg) if cfg.bottleneck_lr_by_width else []
    grouped = {id(p) for group in groups for p in group["params"]}
    groups += [{"params": [p for p in model.readout_parameters() if id(p) not in grouped], "lr": cfg.lr},
               {"params": list(model.selectors.layer.parameters()), "lr": layer_lr, "name": "layer_selector"},
               {"params": others, "lr": selector_lr}]
    if layer_lr == 0:
        groups = [group for group in groups if group.get("name") != "layer_selector"]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def bottleneck_groups(model: FactorTopy, cfg: FitConfig) -> list[dict[str, Any]]:
    """One optimiser group per layer holding its local and global bottleneck at ``lr * median(C) / C_l``.

    AdamW moves every weight by about its learning rate per step, whatever the gradient's
    size, so the output ``B_l x`` of a bottleneck over C_l unit-RMS channels moves about C_l
    times as far per step as one over a single channel. At one shared rate the widest layer's
    bottleneck (1,280 channels in mobilenet_v2, 16 in its narrowest block) fits the targets
    first and a trained layer selector follows it. Dividing by the width equalises the pace.
    """
    median = float(np.median(model.n_channels))
    return [{"params": [*local.parameters(), *global_.parameters()], "lr": cfg.lr * median / channels}
            for local, global_, channels in zip(model.local_bottlenecks, model.global_bottlenecks, model.n_channels)]


def layer_selector_trains(cfg: FitConfig, epochs_done: int) -> bool:
    """Whether the layer selector trains in the epoch after ``epochs_done`` finished ones: never when
    ``cfg.layer_lr == 0``, else once ``cfg.layer_release_epochs`` epochs have trained the bottlenecks and
    read-outs under the warm-started layer choice (a frozen parameter gets no gradient, so AdamW leaves it be)."""
    return cfg.layer_lr != 0 and epochs_done >= cfg.layer_release_epochs


def train_epoch(model: FactorTopy, train: Sequence[Any], optimiser: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, state: TrainState, cfg: FitConfig, *,
                precision: str, fade_steps: int, edges: Sequence[torch.Tensor | None],
                bar: Any) -> dict[str, Any]:
    """One pass over every subject's training images (``train``: one source per subject, ``edges`` one
    neighbour tensor or None per subject); each step fits one subject's batch with that subject's read-out.
    Advances ``state.step`` and ``state.epoch``, returns the epoch's metrics."""
    epoch = state.epoch + 1
    device = next(model.parameters()).device
    model.train()
    tic, seen, loss_sum, prior = time.perf_counter(), 0, 0.0, 0.0
    for subject, batch in interleaved_batches(train, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch):
        prior = prior_weight(state.step, weight=cfg.prior_weight, fade_steps=fade_steps)
        with autocast_context(device, precision):
            chosen = model.selections(subject=subject)       # the selector MLPs once, for every term of the step
            prediction = model(batch.local, batch.global_, subject=subject, selections=chosen)
        loss = regression_loss(prediction.float(), batch.target, beta=cfg.loss_beta)
        total = loss
        if prior > 0:
            total = total + prior * model.regulariser(subject=subject, selections=chosen)
        if cfg.smoothness_weight > 0 and edges[subject] is not None:
            total = total + cfg.smoothness_weight * smoothness_penalty(chosen, edges[subject])
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
    if not math.isfinite(loss_sum):
        stores = ", ".join(sorted({str(source.store.path) for source in train}))
        raise InvalidInputError(
            f"training loss is {loss_sum / max(seen, 1)} after epoch {epoch}: the features or the targets hold NaN/Inf "
            f"(a damaged chunk of {stores}, or NaN responses); nothing was written, any previous fit is kept")
    state.epoch = epoch
    seconds = time.perf_counter() - tic
    return {"epoch": epoch, "step": state.step, "train_loss": loss_sum / max(seen, 1), "prior_weight": prior,
            "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds}


def validation_scores(model: FactorTopy, parts: Sequence[SubjectPart], cfg: FitConfig,
                      precision: str) -> dict[str, float]:
    """``val_r2``: the mean over subjects of each subject's mean validation R^2 (what early stopping
    follows); with several subjects also ``val_r2_<subject>`` for each."""
    scores = {part.subject.name: float(np.mean(r2_score(predict(model, part.sources["val"], cfg, precision,
                                                                subject=index), part.sources["val"].targets)))
              for index, part in enumerate(parts)}
    row = {"val_r2": float(np.mean(list(scores.values())))}
    if len(parts) > 1:
        row.update({f"val_r2_{name}": score for name, score in scores.items()})
    return row


def predict(model: FactorTopy, source: Any, cfg: FitConfig, precision: str, *,
            subject: int = 0) -> np.ndarray:
    """Predictions of ``subject``'s read-out, shape (source.n_images, n_vertices), rows in the source's image order."""
    model.eval()
    out = np.zeros(source.targets.shape, dtype=np.float32)
    batch_size = eval_batch_size(cfg, source.device, n_vertices=out.shape[1], n_layers=len(source.layer_indices))
    with torch.no_grad(), autocast_context(source.device, precision):
        for batch in source.batches(batch_size=batch_size, shuffle=False):
            out[batch.positions] = model(batch.local, batch.global_, subject=subject).float().cpu().numpy()
    model.train()
    return out


def eval_batch_size(cfg: FitConfig, device: torch.device, *, n_vertices: int, n_layers: int) -> int:
    """``cfg.eval_batch_size``, lowered on the CPU so one batch's read-out intermediates (about
    ``n_vertices x n_layers x 20`` bytes per image) stay within ``EVAL_BATCH_BYTES`` of host memory."""
    if device.type != "cpu":
        return cfg.eval_batch_size
    return max(1, min(cfg.eval_batch_size, EVAL_BATCH_BYTES // (n_vertices * n_layers * 20)))


def fit_identity(stores: Sequence[FeatureStore], subjects: Sequence[Subject], cfg: FitConfig,
                 layer_names: tuple[str, ...]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: layers, subjects, their splits, stores and config."""
    config = {key: value for key, value in to_json_data(cfg).items() if key not in RESUMABLE_KEYS}
    splits = [{name: hash_strings(map(str, subject.stimulus_ids[rows]))
               for name, rows in sorted(subject.splits.items())} for subject in subjects]
    return {"layer_names": list(layer_names), "subjects": [subject.name for subject in subjects],
            "n_vertices": [subject.n_vertices for subject in subjects], "splits_sha256": splits,
            "store_images_sha256": [hash_strings(map(str, store.image_ids)) for store in stores], "config": config}


def selection_summary(model: FactorTopy) -> dict[str, float]:
    """Mean layer entropy, distinct argmax layers, the share of vertices on the most chosen layer
    (``layer_modal_share``, near 1 when the layer selector has collapsed) and the spread of the space
    selections over every subject's vertices: how far the selectors have moved."""
    from stages.fit.result import layer_summary

    selections = [model.selections(subject=index) for index in range(model.n_subjects)]
    weights = np.concatenate([chosen.layer_weights.detach().float().cpu().numpy() for chosen in selections])
    summary = layer_summary(weights)
    space = np.concatenate([chosen.space.detach().float().cpu().numpy() for chosen in selections])
    return {"layer_entropy": float(summary["layer_entropy"].mean()),
            "layer_argmax_distinct": int(len(np.unique(summary["layer_argmax"]))),
            "layer_modal_share": float(np.bincount(summary["layer_argmax"]).max() / len(weights)),
            "space_spread": float(space.std(axis=0).mean())}


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _last(state: TrainState, key: str) -> str:
    return f"{state.history[-1][key]:.4f}" if state.history else "-"

