"""FactorTopy against a plain implementation of the method's equations, plus its encoding, selectors and objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cache.errors import ConfigError, InvalidInputError
from plain_factortopy import plain_copy_of, plain_encoding, plain_gradients_of, plain_negative_entropy
from stages.fit.encoding import encode_positions, normalise_coordinates
from stages.fit.factortopy import FactorTopy, FactorTopyConfig, Selections, pyramid_sizes
from stages.fit.objective import prior_weight, regression_loss, smoothness_penalty
from stages.fit.readout import bilinear_corners


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def perturbed_model(n_channels: list[int], *, grid: int = 8, n_vertices: int = 300, bottleneck: int = 16,
                    scale_mode: str = "mix", seed: int = 0, coords: torch.Tensor | list | None = None) -> FactorTopy:
    """A model whose zero-initialised heads are randomised, so points spread over and beyond the grid."""
    torch.manual_seed(seed)
    coords = torch.randn(n_vertices, 3) * 50 if coords is None else coords
    model = FactorTopy(n_channels=n_channels, grid=grid, coords=coords,
                       cfg=FactorTopyConfig(bottleneck=bottleneck, scale_mode=scale_mode))
    with torch.no_grad():
        # Space: raw outputs centred over vertices with unit spread, so tanh puts points all
        # over the grid, about a third of them beyond the outermost cell centres.
        hidden = model.selectors.space.body(model.position_encoding(0))
        mean = hidden.mean(dim=0)
        weight = torch.randn(2, hidden.shape[1])
        weight -= (weight @ mean)[:, None] * mean / mean.dot(mean)
        weight /= (hidden @ weight.T).std(dim=0)[:, None]
        model.selectors.space.head.weight.copy_(weight)
        for head in (model.selectors.layer.head, model.selectors.scale.head):
            head.weight.normal_(0.0, 1.5)
    return model


def random_inputs(n_channels: list[int], grid: int, n_images: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    local = [torch.randn(n_images, c, grid, grid, generator=generator) for c in n_channels]
    global_ = [torch.randn(n_images, c, generator=generator) for c in n_channels]
    return local, global_


def check_equivalence(model: FactorTopy, plain: torch.nn.Module, local, global_, outputs: slice,
                      subject: int = 0) -> None:
    prediction = model(local, global_, subject=subject)
    reference = plain(local, global_)[:, outputs]
    assert relative_error(prediction, reference) < 1e-4
    upstream = torch.randn_like(reference)
    (prediction * upstream).sum().backward()
    (reference * upstream).sum().backward()
    for name, (ours, theirs) in plain_gradients_of(model, plain).items():
        single_layer_softmax = model.n_layers == 1 and name.startswith("selectors.layer")
        assert theirs is not None and (float(theirs.norm()) > 0 or single_layer_softmax), name
        assert relative_error(ours, theirs) < 1e-4, name


@pytest.mark.parametrize("n_channels", [[16], [24, 8, 40], [32, 32, 32, 32]])
def test_matches_plain_implementation_with_gradients(n_channels: list[int]) -> None:
    model = perturbed_model(n_channels)
    space = model.selections().space.detach()
    edge = 1 - 1 / model.grid  # beyond the outermost cell centre: one or two corners fall off the grid
    assert (space.abs() > edge).any(dim=1).float().mean() > 0.2
    assert (space.abs() < edge).all(dim=1).float().mean() > 0.1
    plain = plain_copy_of(model, model_coords(model))
    check_equivalence(model, plain, *random_inputs(n_channels, 8, n_images=5), outputs=slice(None))


def model_coords(model: FactorTopy) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(model.n_vertices(), 3) * 50


@pytest.mark.parametrize("grid", [1, 7])
def test_matches_plain_on_other_grids(grid: int) -> None:
    model = perturbed_model([12, 20], grid=grid)
    check_equivalence(model, plain_copy_of(model, model_coords(model)), *random_inputs([12, 20], grid, 3),
                      outputs=slice(None))


def test_pyramid_mode_matches_plain() -> None:
    model = perturbed_model([12, 20], scale_mode="pyramid")
    assert model.levels == (8, 4, 2)
    levels = model.selections().scale_levels
    assert levels.shape == (300, 5)
    check_equivalence(model, plain_copy_of(model, model_coords(model)), *random_inputs([12, 20], 8, 3),
                      outputs=slice(None))


def test_several_subjects_share_selectors_and_keep_their_readouts() -> None:
    torch.manual_seed(3)
    first, second = torch.randn(120, 3) * 40, torch.randn(80, 3) * 40 + 5
    model = perturbed_model([12, 20], coords=[first, second])
    assert model.n_subjects == 2 and model.n_vertices(1) == 80
    plain = plain_copy_of(model, torch.cat([first, second]))
    local, global_ = random_inputs([12, 20], 8, 3)
    prediction = model(local, global_, subject=1)
    assert prediction.shape == (3, 80)
    given = model(local, global_, subject=1, selections=model.selections(subject=1))
    assert torch.equal(given, prediction)
    check_equivalence(model, plain, local, global_, outputs=slice(120, 200), subject=1)
    assert model.readouts[0].weight.grad is None  # subject 0's read-out took no part
    with pytest.raises(InvalidInputError, match="subject index 2"):
        model(local, global_, subject=2)


def test_gradient_reaches_the_space_selector_through_bilinear_weights() -> None:
    model = perturbed_model([8, 8])
    model(*random_inputs([8, 8], 8, 2)).square().sum().backward()
    assert float(model.selectors.space.head.weight.grad.norm()) > 0
    space = torch.tensor([[0.13, -0.71], [-0.99, 0.99], [0.0, 0.0], [0.95, -0.2]], requires_grad=True)
    torch.autograd.gradcheck(lambda s: bilinear_corners(s, 8)[1], (space.detach().double().requires_grad_(),))
    tokens = torch.randn(8, 8)
    cell, weights = bilinear_corners(space, 8)
    assert torch.allclose(weights.sum(dim=1), torch.ones(4))
    padded = F.pad(tokens, (1, 1, 1, 1)).reshape(-1)
    top_left = cell // 9 * 10 + cell % 9
    values = padded[top_left[:, None] + torch.tensor([0, 1, 10, 11])]
    sampled = F.grid_sample(tokens[None, None], space.view(1, 4, 1, 2), align_corners=False)[0, 0, :, 0]
    assert torch.allclose((weights * values).sum(dim=1), sampled, atol=1e-6)


def test_initial_state_is_undecided_and_readout_initialised_like_linear() -> None:
    torch.manual_seed(0)
    model = FactorTopy(n_channels=[8, 8, 8], grid=8, coords=torch.randn(50, 3), cfg=FactorTopyConfig())
    chosen = model.selections()
    assert torch.equal(chosen.space, torch.zeros(50, 2))
    assert torch.allclose(chosen.layer_weights, torch.full((50, 3), 1 / 3))
    assert torch.equal(chosen.scale, torch.full((50,), 0.5))
    bound = 1 / math.sqrt(128)
    weight = model.readouts[0].weight.detach()
    assert weight.shape == (50, 128) and float(weight.abs().max()) <= bound and float(weight.std()) > bound / 3
    assert model.regulariser().item() == pytest.approx(-1.0, abs=1e-6)


def test_regulariser_matches_formula() -> None:
    model = perturbed_model([8, 8, 8])
    chosen = model.selections()
    expected = plain_negative_entropy(chosen.layer_weights) + ((chosen.scale - 0.5) ** 2).mean()
    assert model.regulariser().item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.regulariser(selections=chosen).item() == pytest.approx(expected.item(), rel=1e-5)
    pyramid = perturbed_model([8, 8, 8], scale_mode="pyramid")
    chosen = pyramid.selections()
    expected = plain_negative_entropy(chosen.layer_weights) + plain_negative_entropy(chosen.scale_levels)
    assert pyramid.regulariser().item() == pytest.approx(expected.item(), rel=1e-5)
    position = (chosen.scale_levels * torch.linspace(0, 1, 5)).sum(dim=1)
    assert torch.allclose(chosen.scale, position)


def test_encoding_matches_the_method() -> None:
    coords = torch.randn(40, 3) * torch.tensor([30.0, 5.0, 12.0]) + 7
    normalised = normalise_coordinates(coords)
    assert torch.allclose(normalised.min(dim=0).values, torch.zeros(3))
    assert float(normalised.max()) == pytest.approx(100.0)
    extent = normalised.max(dim=0).values / (coords.max(dim=0).values - coords.min(dim=0).values)
    assert torch.allclose(extent, extent[0].expand(3))  # isotropic
    encoding = encode_positions(normalised, n_frequencies=32)
    assert encoding.shape == (40, 192)
    assert torch.allclose(encoding, plain_encoding(coords, 32), atol=1e-4)
    x = np.asarray(normalised[:, 1], dtype=np.float64)
    assert np.allclose(encoding[:, 64 + 5].numpy(), np.sin(1000 ** (-5 / 32) * x), atol=1e-4)
    assert np.allclose(encoding[:, 64 + 32 + 31].numpy(), np.cos(1000 ** (-31 / 32) * x), atol=1e-4)


def test_parameter_groups_partition_the_parameters() -> None:
    model = perturbed_model([8, 8], scale_mode="pyramid")
    selectors = {id(p) for p in model.selector_parameters()}
    others = {id(p) for p in model.readout_parameters()}
    assert selectors and others and not selectors & others
    assert selectors | others == {id(p) for p in model.parameters()}
    assert id(model.readouts[0].weight) in others and id(model.local_bottlenecks[0].weight) in others


def test_bfloat16_autocast_stays_close() -> None:
    model = perturbed_model([16, 16])
    local, global_ = random_inputs([16, 16], 8, 4)
    exact = model(local, global_)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approximate = model(local, global_)
    assert relative_error(approximate.float(), exact) < 0.05


def test_bad_config_and_inputs_are_rejected() -> None:
    with pytest.raises(ConfigError, match="scale_mode"):
        FactorTopyConfig(scale_mode="local")
    with pytest.raises(ConfigError, match="bottleneck"):
        FactorTopyConfig(bottleneck=0)
    with pytest.raises(InvalidInputError, match="expected \\(n_vertices, 3\\)"):
        FactorTopy(n_channels=[8], grid=8, coords=torch.randn(10, 2), cfg=FactorTopyConfig())
    with pytest.raises(InvalidInputError, match="NaN"):
        FactorTopy(n_channels=[8], grid=8, coords=torch.full((10, 3), float("nan")), cfg=FactorTopyConfig())
    model = FactorTopy(n_channels=[8, 4], grid=8, coords=torch.randn(10, 3), cfg=FactorTopyConfig(bottleneck=4))
    local, global_ = random_inputs([8, 4], 8, 2)
    with pytest.raises(InvalidInputError, match="built for 2 layers"):
        model(local[:1], global_[:1])
    with pytest.raises(InvalidInputError, match="layer 1"):
        model([local[0], torch.randn(2, 4, 4, 4)], global_)


def test_regression_loss_and_prior_schedule() -> None:
    pred, target = torch.randn(6, 9), torch.randn(6, 9)
    diff = (pred - target).abs()
    expected = torch.where(diff < 0.1, 0.5 * diff**2 / 0.1, diff - 0.05).mean()
    assert float(regression_loss(pred, target)) == pytest.approx(float(expected), rel=1e-6)
    assert prior_weight(0) == pytest.approx(0.1)
    assert prior_weight(1000) == pytest.approx(0.05)
    assert prior_weight(2000) == 0.0 and prior_weight(5000) == 0.0
    assert prior_weight(10, weight=1.0, fade_steps=0) == 0.0


def test_smoothness_penalty_over_edges() -> None:
    layer = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    space = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.0, 0.0]])
    scale = torch.tensor([0.0, 1.0, 0.5])
    chosen = Selections(layer_weights=layer, space=space, scale=scale)
    edges = torch.tensor([[0, 1], [0, 2]])
    first = 2.0 + 0.25 + 0.25 + 1.0
    second = 0.5 + 0.0 + 0.25
    assert float(smoothness_penalty(chosen, edges)) == pytest.approx((first + second) / 2)
    assert float(smoothness_penalty(chosen, torch.zeros(0, 2, dtype=torch.long))) == 0.0
    with pytest.raises(InvalidInputError, match="edges index vertices"):
        smoothness_penalty(chosen, torch.tensor([[0, 3]]))
    with pytest.raises(InvalidInputError, match="n_edges, 2"):
        smoothness_penalty(chosen, torch.tensor([0, 1]))


def test_pyramid_sizes() -> None:
    assert pyramid_sizes(8) == (8, 4, 2)
    assert pyramid_sizes(16) == (16, 8, 4, 2)
    assert pyramid_sizes(7) == (7, 3)
    assert pyramid_sizes(1) == ()
