"""Why a trained layer selector collapses: a step-by-step diagnostic on a synthetic subject.

From the improved mode's warm start it measures, on one shape of ``bench/recovery.py``
(its store and planted subject must exist: run ``bench/recovery.py --shapes SHAPE`` first):

1. the warm start's margins: per vertex, the gap between the best and second-best layer logit;
2. the layer-logit gradient over the whole training set, before training and after each of
   ``--epochs`` epochs with the layer choice fixed: which layer it favours per vertex (against the
   planted layer), and, where the warm-start argmax is wrong, whether it prefers the planted
   layer to the current one (0.5 = chance);
3. training with the layer selector from the first step (``--layer-lr``, optionally with
   ``--by-width`` bottleneck rates): after selected steps, how many vertices kept their warm-start
   layer, the most chosen layer and its share, and exact recovery.

    .venv/bin/python bench/layer_collapse.py [--run-root runs] [--shape mobilenet_v2] [--epochs 1]
        [--steps 20] [--layer-lr 1e-3] [--by-width]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from recovery import SHAPES  # noqa: E402
from cache.store import FeatureStore  # noqa: E402
from pipeline import runroot  # noqa: E402
from pipeline.subjects import load_subject  # noqa: E402
from pipeline.synthetic.layout import load_planted_truth  # noqa: E402
from stages.fit.config import FitConfig  # noqa: E402
from stages.fit.factortopy import FactorTopy  # noqa: E402
from stages.fit.inputs import check_inputs  # noqa: E402
from stages.fit.objective import regression_loss  # noqa: E402
from stages.fit.train import build_optimiser, interleaved_batches, prepare_subject, shared_feature_scales  # noqa: E402
from stages.fit.warmstart import warm_start  # noqa: E402

REPORT_STEPS = (1, 2, 5, 10, 20, 40, 60, 100, 200)


def build(store: FeatureStore, subject, cfg: FitConfig):
    """A warm-started model, its optimiser and the training source, as ``train_factortopy`` builds them."""
    layers = check_inputs(store, subject, layers=None, grid=cfg.grid, min_train=cfg.batch_size, neighbours=None)
    torch.manual_seed(cfg.seed)
    model = FactorTopy(n_channels=[store.n_channels[i] for i in layers], grid=cfg.grid,
                       coords=[torch.from_numpy(np.asarray(subject.sphere_coords, dtype=np.float32))], cfg=cfg.model)
    optimiser = build_optimiser(model, cfg)
    warm_start(model, [store], [subject], cfg, layer_indices=layers, device=torch.device("cpu"))
    scales = shared_feature_scales([store], [subject], layer_indices=layers, grid=cfg.grid)
    part = prepare_subject(store, subject, cfg, layer_indices=layers, device=torch.device("cpu"), scales=scales,
                           neighbours=None)
    return model, optimiser, part.sources["train"]


def logit_gradient(model: FactorTopy, train, cfg: FitConfig) -> np.ndarray:
    """dLoss/dlogit of the layer softmax summed over the training set, shape (n_vertices, n_layers)."""
    total = None
    for _, batch in interleaved_batches([train], batch_size=128, seed=cfg.seed, epoch=10_000):
        chosen = model.selections()
        chosen.layer_weights.retain_grad()
        loss = regression_loss(model(batch.local, batch.global_, selections=chosen), batch.target, beta=cfg.loss_beta)
        model.zero_grad(set_to_none=True)
        loss.backward()
        grad, weights = chosen.layer_weights.grad, chosen.layer_weights.detach()
        step = weights * (grad - (weights * grad).sum(dim=1, keepdim=True))
        total = step if total is None else total + step
    model.zero_grad(set_to_none=True)
    return total.numpy()


def gradient_report(tag: str, model: FactorTopy, train, cfg: FitConfig, truth: np.ndarray) -> None:
    push = -logit_gradient(model, train, cfg)
    current = model.selections().layer_weights.detach().argmax(dim=1).numpy()
    favoured = push.argmax(axis=1)
    rows, wrong = np.arange(len(push)), current != truth
    prefers = float(np.mean(push[rows, truth][wrong] > push[rows, current][wrong])) if wrong.any() else float("nan")
    print(f"{tag}: favoured layer exact {np.mean(favoured == truth):.3f}, within 1 "
          f"{np.mean(np.abs(favoured - truth) <= 1):.3f}, most favoured L{np.bincount(favoured).argmax()}; where the "
          f"argmax is wrong it prefers the planted layer to the current one for {prefers:.2f}", flush=True)


def _step(model, optimiser, batch, cfg: FitConfig) -> None:
    """One plain training step: the fit's loss, gradient clipping and the optimiser."""
    loss = regression_loss(model(batch.local, batch.global_), batch.target, beta=cfg.loss_beta)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
    optimiser.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-root", type=Path, default=ROOT / "runs")
    parser.add_argument("--shape", choices=list(SHAPES), default="mobilenet_v2")
    parser.add_argument("--subject", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1, help="epochs with the layer choice fixed before part 2 ends")
    parser.add_argument("--steps", type=int, default=20, help="steps of part 3")
    parser.add_argument("--layer-lr", type=float, default=1e-3)
    parser.add_argument("--by-width", action="store_true", help="part 3 with bottleneck_lr_by_width")
    args = parser.parse_args(argv)
    model_id, _, folder = SHAPES[args.shape]
    root = args.run_root.resolve() if folder is None else args.run_root.resolve() / folder
    store = FeatureStore.open(runroot.feature_store_path(root, "demo", model_id))
    subject = load_subject("synthetic", args.subject, root=root, val_fraction=0.05)
    truth = np.asarray(load_planted_truth(runroot.synthetic_root(root) / subject.name).vertices["layer_argmax"])
    print(f"{args.shape}: {store.n_layers} layers of {min(store.n_channels)}..{max(store.n_channels)} channels, "
          f"{subject.n_vertices} vertices", flush=True)

    fixed = FitConfig(device="cpu", resident="on")
    model, optimiser, train = build(store, subject, fixed)
    logits = model.selectors.layer(model.position_encoding()).detach()
    top = logits.topk(2, dim=1).values
    gap = (top[:, 0] - top[:, 1]).numpy()
    print(f"1. warm start: exact {np.mean(logits.argmax(dim=1).numpy() == truth):.3f}; best minus second-best logit "
          f"median {np.median(gap):.3f}, 10th percentile {np.quantile(gap, 0.1):.3f}", flush=True)
    gradient_report("2. before training", model, train, fixed, truth)
    for epoch in range(1, args.epochs + 1):
        for _, batch in interleaved_batches([train], batch_size=fixed.batch_size, seed=fixed.seed, epoch=epoch):
            _step(model, optimiser, batch, fixed)
        gradient_report(f"2. after {epoch} epoch(s), layer fixed", model, train, fixed, truth)

    trained = replace(fixed, layer_lr=args.layer_lr, bottleneck_lr_by_width=args.by_width)
    model, optimiser, train = build(store, subject, trained)
    start = model.selections().layer_weights.detach().argmax(dim=1).numpy()
    step = 0
    while step < args.steps:
        for _, batch in interleaved_batches([train], batch_size=trained.batch_size, seed=trained.seed, epoch=step + 1):
            _step(model, optimiser, batch, trained)
            step += 1
            if step in REPORT_STEPS or step == args.steps:
                chosen = model.selections().layer_weights.detach().argmax(dim=1).numpy()
                counts = np.bincount(chosen, minlength=store.n_layers)
                print(f"3. step {step:4d} (layer lr {args.layer_lr:g}{', by width' if args.by_width else ''}): "
                      f"kept warm-start layer {np.mean(chosen == start):.2f}, most chosen L{counts.argmax()} share "
                      f"{counts.max() / len(chosen):.2f}, distinct {np.count_nonzero(counts)}, exact "
                      f"{np.mean(chosen == truth):.3f}", flush=True)
            if step >= args.steps:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
