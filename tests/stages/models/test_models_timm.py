"""timm backbones: ViT blocks via forward_intermediates against a hand-run block loop; the tiny test model."""

from __future__ import annotations

import pytest
import torch

from cache.errors import InvalidInputError, WeightsUnavailableError
from stages.models.registry import load_model


def _block_loop(module: torch.nn.Module, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Independent oracle: run timm's ViT pieces by hand and keep every block's output sequence."""
    hidden = module.norm_pre(module._pos_embed(module.patch_embed(pixels)))
    outputs = []
    for block in module.blocks:
        hidden = block(hidden)
        outputs.append(hidden)
    return outputs


def test_test_vit_tokens_match_block_outputs() -> None:
    torch.manual_seed(0)
    model = load_model("timm:test_vit", pretrained=False)
    info = model.info
    assert info.n_layers == 6 and info.n_channels == (64,) * 6 and info.weights == "random-init"
    assert info.preprocessing.size == (160, 160) and info.preprocessing.mean == (0.5, 0.5, 0.5)
    pixels = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    tokens = model(pixels)
    with torch.no_grad():
        expected = _block_loop(model.backbone, pixels)
    for token, sequence in zip(tokens, expected):
        assert token.local.shape == (2, 64, 10, 10) and token.global_.shape == (2, 64)
        torch.testing.assert_close(token.global_, sequence[:, 0])
        torch.testing.assert_close(token.local, sequence[:, 1:].reshape(2, 10, 10, 64).permute(0, 3, 1, 2))
    other = model(torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(2)))
    assert all(not torch.allclose(a.local, b.local) and not torch.allclose(a.global_, b.global_) for a, b in zip(tokens, other))
    assert not any(parameter.requires_grad for parameter in model.parameters()) and not model.backbone.training


def test_register_token_without_class_token_uses_spatial_mean() -> None:
    model = load_model("timm:test_vit3", pretrained=False)  # one register token, no class token
    pixels = torch.randn(1, 3, 160, 160)
    tokens = model(pixels)
    with torch.no_grad():
        expected = _block_loop(model.backbone, pixels)
    n_prefix = model.backbone.num_prefix_tokens
    for token, sequence in zip(tokens, expected):
        grid = token.local.shape[-1]
        torch.testing.assert_close(token.local, sequence[:, n_prefix:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2))
        torch.testing.assert_close(token.global_, token.local.mean(dim=(2, 3)))


def test_hierarchical_timm_model_yields_feature_stages() -> None:
    model = load_model("timm:test_convnext", pretrained=False)
    widths = tuple(entry["num_chs"] for entry in model.backbone.feature_info)
    tokens = model(torch.randn(1, 3, 64, 64))
    assert model.info.n_channels == widths == tuple(token.local.shape[1] for token in tokens)
    assert all(torch.allclose(token.global_, token.local.mean(dim=(2, 3))) for token in tokens)


def test_reference_preprocessing_uses_224() -> None:
    model = load_model("timm:test_vit", pretrained=False, reference_preprocessing=True)
    assert model.info.preprocessing.size == (224, 224) and model.info.preprocessing.mean == (0.485, 0.456, 0.406)
    assert model(torch.zeros(1, 3, 224, 224))[0].local.shape == (1, 64, 14, 14)


def test_timm_errors() -> None:
    with pytest.raises(InvalidInputError, match="timm has no model 'vit_tiniest'"):
        load_model("timm:vit_tiniest", pretrained=False)
    with pytest.raises(WeightsUnavailableError, match=r"^timm:test_vit: .*huggingface-cli download timm/test_vit"):
        load_model("timm:test_vit")
    with pytest.raises(InvalidInputError, match=r"expected \(n_images, 3, height, width\)"):
        load_model("timm:test_vit", pretrained=False)(torch.zeros(3, 160, 160))
