"""Training the layer selector: width-balanced bottleneck rates, the release epoch, and the collapse it guards against."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cache.errors import ConfigError
from stages.fit.config import LEARNED_LAYER_PRESET, FitConfig
from stages.fit.factortopy import FactorTopy, FactorTopyConfig
from stages.fit.train import bottleneck_groups, build_optimiser, fit_factortopy, layer_selector_trains

FAST = dict(epochs=1, batch_size=16, warm_start="layer", eval_batch_size=32)


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
