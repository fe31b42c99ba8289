"""Training the layer selector: width-balanced bottleneck rates, the release epoch, and the collapse it guards against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from builders import planted_subject
from cache.errors import ConfigError
from cache.store import FeatureStore, StoreLayout
from stages.fit.config import LEARNED_LAYER_PRESET, FitConfig
from stages.fit.factortopy import FactorTopy, FactorTopyConfig
from stages.fit.train import bottleneck_groups, build_optimiser, fit_factortopy, layer_selector_trains

FAST = dict(epochs=1, batch_size=16, warm_start="layer", eval_batch_size=32)
#: Widths of the residual-stream store: like mobilenet_v2, the last block is many times wider than the first.
WIDTHS = (16, 24, 32, 64, 128, 256)


def residual_store(path: Path, *, widths: tuple[int, ...] = WIDTHS, n_images: int = 192, step: float = 0.2,
                   seed: int = 0) -> FeatureStore:
    """A store whose blocks read one 16-channel residual stream that each block adds a little to (``step``
    of the first block's size), each through its own random mixing into its width: neighbouring blocks are
    alike, as in a real network, so the planted layer is only weakly identified."""
    rng = np.random.default_rng(seed)
    grid, stream_channels = 8, 16
    layout = StoreLayout(layer_names=tuple(f"block{i}" for i in range(len(widths))), n_channels=widths,
                         grids=(grid,), dtype="float32", chunk_images=n_images)
    store = FeatureStore.create(path, image_ids=[f"demo-{i:05d}" for i in range(n_images)], layout=layout,
                                provenance={"model": {"model_id": "fake-residual"}})
    stream = np.zeros((n_images, stream_channels, grid, grid))
    local = []
    for layer, width in enumerate(widths):
        coarse = rng.normal(size=(n_images, stream_channels, 2, 2))
        added = np.repeat(np.repeat(coarse, grid // 2, 2), grid // 2, 3) + 0.5 * rng.normal(size=stream.shape)
        stream = stream + (1.0 if layer == 0 else step) * added
        mixing = rng.normal(size=(width, stream_channels)) / np.sqrt(stream_channels)
        local.append(np.einsum("wc,ncyx->nwyx", mixing, stream).astype(np.float32))
    store.write_chunk(0, local={grid: local}, global_=[tokens.mean(axis=(2, 3)) for tokens in local])
    return store


def _model(channels: tuple[int, ...]) -> FactorTopy:
    torch.manual_seed(0)
    return FactorTopy(n_channels=channels, grid=4, coords=torch.randn(5, 3), cfg=FactorTopyConfig(bottleneck=8, hidden=8))


def test_bottleneck_groups_divide_the_rate_by_the_layer_width():
    model = _model((8, 32, 128))
    groups = bottleneck_groups(model, FitConfig(lr=1e-2))
    assert [group["lr"] for group in groups] == pytest.approx([1e-2 * 32 / 8, 1e-2, 1e-2 * 32 / 128])
    for group, local, global_ in zip(groups, model.local_bottlenecks, model.global_bottlenecks):
        assert {id(p) for p in group["params"]} == {id(local.weight), id(global_.weight)}


@pytest.mark.parametrize("by_width", [False, True])
@pytest.mark.parametrize("layer_lr", [0.0, 1e-4])
def test_optimiser_holds_each_trained_parameter_once(by_width, layer_lr):
    model = _model((8, 32, 128))
    optimiser = build_optimiser(model, FitConfig(bottleneck_lr_by_width=by_width, layer_lr=layer_lr))
    held = [id(p) for group in optimiser.param_groups for p in group["params"]]
    layer = {id(p) for p in model.selectors.layer.parameters()}
    expected = {id(p) for p in model.parameters()} - (layer if layer_lr == 0 else set())
    assert len(held) == len(set(held)) and set(held) == expected
    rates = {group["lr"] for group in optimiser.param_groups}
    assert (1e-2 * 32 / 128 in rates) == by_width


def test_release_epochs_are_checked():
    assert FitConfig(layer_release_epochs=3).layer_release_epochs == 3
    for bad in (-1, 1.5):
        with pytest.raises(ConfigError, match="layer_release_epochs"):
            FitConfig(layer_release_epochs=bad)


def test_layer_selector_trains_only_when_released():
    assert not layer_selector_trains(FitConfig(layer_lr=0.0), 5)
    cfg = FitConfig(layer_lr=1e-3, layer_release_epochs=2)
    assert [layer_selector_trains(cfg, done) for done in range(4)] == [False, False, True, True]


def test_layer_choice_stays_at_the_warm_start_until_its_release_epoch(store, subject):
    """One epoch before the release the layer weights equal a fit whose layer selector never trains;
    released from the start, the same rate moves them."""
    fixed = fit_factortopy(store, subject, FitConfig(**FAST, layer_lr=0.0), checkpoint_dir=None, progress=False)
    held = fit_factortopy(store, subject, FitConfig(**FAST, layer_lr=1e-2, layer_release_epochs=1),
                          checkpoint_dir=None, progress=False)
    moved = fit_factortopy(store, subject, FitConfig(**FAST, layer_lr=1e-2), checkpoint_dir=None, progress=False)
    np.testing.assert_allclose(held.layer_weights, fixed.layer_weights, atol=1e-6)
    assert np.abs(moved.layer_weights - fixed.layer_weights).max() > 1e-3


def test_learned_preset_is_a_valid_config():
    cfg = FitConfig(**LEARNED_LAYER_PRESET)
    assert cfg.layer_lr > 0 and layer_selector_trains(cfg, cfg.layer_release_epochs)


def test_width_balanced_rates_stop_the_widest_layer_taking_vertices(tmp_path):
    """The collapse in small: blocks alike, the last one 16x wider than the first, the layer selector trained
    from the first step. At one shared bottleneck rate the widest block gains vertices it was not planted on
    (the mobilenet_v2 fit put 94 % of vertices on its 1,280-channel block within 10 steps); with rates divided
    by the width the layer map stays with the planted one."""
    store = residual_store(tmp_path / "residual.zarr")
    subject, truth = planted_subject(store, n_vertices=80, noise=2.0, token="global")
    widest = len(WIDTHS) - 1
    planted_share = float(np.mean(truth["layers"] == widest))
    shares, exact = {}, {}
    for by_width in (False, True):
        cfg = FitConfig(epochs=4, batch_size=16, warm_start="layer", eval_batch_size=64, device="cpu", layer_lr=1e-3,
                        bottleneck_lr_by_width=by_width)
        fit = fit_factortopy(store, subject, cfg, checkpoint_dir=None, progress=False)
        chosen = fit.layer_weights.argmax(axis=1)
        shares[by_width], exact[by_width] = float(np.mean(chosen == widest)), float(np.mean(chosen == truth["layers"]))
    assert shares[False] > planted_share + 0.08 and exact[False] < 0.85
    assert shares[True] < planted_share + 0.05 and exact[True] > 0.9
