"""How a FactorTopy fit is trained: one frozen config, with the reference preset and the improved default.

:data:`REFERENCE_PRESET` reproduces every constant of the reference implementation
(method.md): 8x8 grid, D = 128, smooth-L1 with beta 0.1, the entropy/scale prior at
0.1 fading to 0 by step 2000, AdamW lr 1e-3 with weight decay 0.01, batch 8, gradient
clipping 0.5, a mean read-out and fp16 autocast on GPU.

The default :class:`FitConfig` is the improved mode. The reference schedule assumes
~10,000 steps; on small data and short budgets its selectors barely leave their
initial state. The improved mode warm-starts the layer selector from per-layer ridge
scores and the space selector from per-cell scores (``stages.fit.warmstart``), so
the entropy prior that keeps uniform starts soft is off (weight 0), and trains with
batch 32 and a 10x higher learning rate for the bottlenecks and read-out (1e-2): the
mean over D makes the read-out's reach per step small, and at 1e-3 the held-out R^2
was still climbing after 10 epochs (R^2 / noise ceiling 0.43 at 1e-3, 0.66 at 4e-3,
0.78 at 1e-2 on synthetic subject 1). Options beyond that (own selector learning rate,
prior fade counted in epochs, pyramid scale, smoothness over mesh neighbours, a trained layer selector:
:data:`LEARNED_LAYER_PRESET`) are settings; they are on by default only where ``bench/recovery.py`` or
held-out R^2 showed a gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from cache.errors import ConfigError
from stages.device import Precision
from stages.fit.factortopy import FactorTopyConfig
from stages.fit.layer_confidence import MODEL_ERROR

#: Explicit precisions FactorTopy trains and predicts in on the CPU: bf16, where AMX makes a training step about 30 %
#: faster (fp16 would need a gradient scaler, which the CPU lacks); ``"auto"`` stays fp32 there.
CPU_PRECISIONS = ("bf16",)

#: Every float setting of :class:`FitConfig`: (lowest value, whether the lowest itself is allowed).
FLOAT_RANGES: dict[str, tuple[float, bool]] = {
    "lr": (0.0, False), "selector_lr": (0.0, False), "layer_lr": (0.0, True), "weight_decay": (0.0, True),
    "loss_beta": (0.0, False), "prior_weight": (0.0, True), "prior_fade_epochs": (0.0, True),
    "clip_grad_norm": (0.0, False), "warm_start_temperature": (0.0, False), "smoothness_weight": (0.0, True),
    "layer_model_error": (0.0, True),
}


def check_float(name: str, value: float | None, low: float, *, closed: bool) -> None:
    """Refuse a float setting that is not a finite number above ``low`` (or equal to it when ``closed``); ``None``
    (an unset optional setting) passes. Written so that NaN fails: every comparison with NaN is false."""
    if value is None or (math.isfinite(value) and (value > low or (closed and value == low))):
        return
    raise ConfigError(f"{name} = {value!r}: must be a finite number {'>=' if closed else '>'} {low:g}")


@dataclass(frozen=True)
class FitConfig:
    """Training settings of one FactorTopy fit.

    Attributes:
        model: the FactorTopy architecture (bottleneck D, selector widths, scale mode...).
        layers: store layer names to fit on, in order; ``None`` = every layer of the store.
        grid: the stored local-token grid to read (the method: 8).
        epochs: maximum passes over the training images.
        batch_size: images per optimiser step.
        lr: AdamW learning rate of the bottlenecks and read-out.
        selector_lr: learning rate of the space and scale selector MLPs; ``None`` = ``lr``.
        layer_lr: learning rate of the layer selector MLP; ``None`` = ``selector_lr``; 0 keeps the
            warm-started layer choice fixed. Trained from the first step, the layer selector follows
            the transient gradients of still-random bottlenecks and read-outs and collapses (on the
            synthetic mobilenet_v2 subject, 94 % of vertices on the 1,280-channel last block within
            10 steps at 1e-3; see ``layer_release_epochs`` and ``bottleneck_lr_by_width``).
        layer_release_epochs: epochs the layer selector stays at its warm start before it trains at
            ``layer_lr``, so that it compares layers through trained bottlenecks and read-outs.
        bottleneck_lr_by_width: give each layer's bottlenecks the learning rate
            ``lr * median(C) / C_l``. An AdamW step moves every weight by about the learning rate,
            so at one rate a C-channel layer's bottleneck output moves ~C times as far per step and
            the widest layer's read-out improves first; this equalises the layers' pace.
        weight_decay: AdamW weight decay (the reference's effective value is 0.01).
        loss_beta: smooth-L1 beta of the regression loss.
        prior_weight: weight of the entropy/scale regulariser at step 0.
        prior_fade_steps: steps over which the regulariser fades linearly to 0.
        prior_fade_epochs: the same counted in epochs; when set it replaces ``prior_fade_steps``.
        clip_grad_norm: gradient-norm clipping; ``None`` = no clipping.
        warm_start: ``"none"``; ``"layer"``: initialise the layer selector from per-layer ridge
            scores of each vertex (softmax of the scores divided by ``warm_start_temperature``);
            ``"layer+space"``: also the space selector from per-cell scores (see ``warmstart.py``).
        warm_start_temperature: temperature of the layer target, in R^2 units.
        layer_resamples: bootstrap replicates of the warm start's per-layer errors behind each
            vertex's 90 % layer set and layer confidence (``stages.fit.layer_confidence``); 0 = none.
            Needs a warm start (the reference preset has none, so its fits carry no layer sets).
        layer_model_error: weight of the layer sets' allowance for model error, a share of the best
            layer's error above the noise floor (``stages.fit.layer_confidence``; needs the subject's
            noise ceiling); 0 = resampling noise only.
        normalise_layers: scale each layer's local and global features to unit RMS (factors from
            up to 256 training images, recorded as ``feature_scales`` in the fit's metrics) so no
            layer wins the layer selector by sheer activation magnitude.
        smoothness_weight: weight of a penalty on selector differences across mesh
            neighbours (needs neighbour pairs; 0 = off).
        patience: epochs without a better validation R^2 before stopping early.
        seed: seeds initialisation and batch order.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (``stages.device``).
        precision: autocast: ``"auto"`` (on CUDA bf16 when supported, else fp16; fp32 on the CPU),
            ``"bf16"``, ``"fp16"`` (with a gradient scaler; CUDA only, fp32 on the CPU) or ``"fp32"``.
            The CPU trains in bf16 only when asked (:data:`CPU_PRECISIONS`).
        resident: ``"auto"`` keeps the features on the device when they fit, ``"on"`` forces
            that, ``"off"`` streams the training features from the store. The validation
            split's are held whenever they fit (scored every epoch, they would otherwise be
            read from every chunk each time); see ``stages.fit.train.prepare_subject``.
        shuffle_buffer: images mixed in memory when streaming (bounds host memory).
        prefetch: batches prepared ahead by the background reader.
        eval_batch_size: images per batch when predicting validation and test sets.
    """

    model: FactorTopyConfig = field(default_factory=FactorTopyConfig)
    layers: tuple[str, ...] | None = None
    grid: int = 8
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-2
    selector_lr: float | None = 1e-3
    layer_lr: float | None = 0.0
    layer_release_epochs: int = 0
    bottleneck_lr_by_width: bool = False
    weight_decay: float = 0.01
    loss_beta: float = 0.1
    prior_weight: float = 0.0
    prior_fade_steps: int = 2000
    prior_fade_epochs: float | None = 1.0
    clip_grad_norm: float | None = 0.5
    warm_start: Literal["none", "layer", "layer+space"] = "layer+space"
    warm_start_temperature: float = 0.02
    layer_resamples: int = 100
    layer_model_error: float = MODEL_ERROR
    normalise_layers: bool = True
    smoothness_weight: float = 0.0
    patience: int = 4
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"
    resident: Literal["auto", "on", "off"] = "auto"
    shuffle_buffer: int = 2048
    prefetch: int = 4
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        positive = {"grid": self.grid, "epochs": self.epochs, "batch_size": self.batch_size,
                    "eval_batch_size": self.eval_batch_size, "shuffle_buffer": self.shuffle_buffer,
                    "prefetch": self.prefetch, "patience": self.patience}
        if not isinstance(self.layer_release_epochs, int) or self.layer_release_epochs < 0:
            raise ConfigError(f"layer_release_epochs must be an integer >= 0, got {self.layer_release_epochs!r}")
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value}")
        for name in ("prior_fade_steps", "layer_resamples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, (low, closed) in FLOAT_RANGES.items():
            check_float(name, getattr(self, name), low, closed=closed)
        if self.layers is not None and len(self.layers) == 0:
            raise ConfigError("layers is empty; leave it unset to use every layer of the store")

    def fade_steps(self, steps_per_epoch: int) -> int:
        """Steps over which the prior fades: ``prior_fade_epochs`` converted, else ``prior_fade_steps``."""
        if self.prior_fade_epochs is None:
            return self.prior_fade_steps
        return max(int(round(self.prior_fade_epochs * steps_per_epoch)), 0)


#: The reference implementation's constants, line by line as in method.md: a preset table merged like a user's
#: TOML ``[fit]`` table (``bddn fit --reference``), over which a user's table and flags still win. fp16 autocast
#: applies on CUDA; the CPU trains in fp32. The reference trains about 10 epochs; early stopping is left on with a
#: long patience. The architecture: D = 128, 192 encoding features, local/global mix (the read-out is always a mean).
REFERENCE_PRESET: dict[str, Any] = {
    "model": {"bottleneck": 128, "hidden": 128, "n_frequencies": 32, "scale_mode": "mix"},
    "grid": 8,
    "epochs": 10,
    "batch_size": 8,
    "lr": 1e-3,
    "selector_lr": None,
    "layer_lr": None,
    "weight_decay": 0.01,
    "loss_beta": 0.1,
    "prior_weight": 0.1,
    "prior_fade_steps": 2000,
    "prior_fade_epochs": None,
    "clip_grad_norm": 0.5,
    "warm_start": "none",
    "normalise_layers": False,
    "smoothness_weight": 0.0,
    "patience": 10,
    "precision": "fp16",
}


#: A trained layer selector (``bench/recovery.py --methods learned``): the improved mode's settings with the
#: layer selector released after the bottlenecks and read-outs have trained under the warm start, at a low rate,
#: with width-balanced bottleneck rates. Merged like ``REFERENCE_PRESET``.
LEARNED_LAYER_PRESET: dict[str, Any] = {
    "layer_lr": 1e-4,
    "layer_release_epochs": 2,
    "bottleneck_lr_by_width": True,
}
