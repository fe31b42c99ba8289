"""The registry contract: every named spec agrees with a build of its architecture; names and CLI."""

from __future__ import annotations

import json

import pytest
import torch

from cache.errors import InvalidInputError
from pipeline.cli import main
from stages.models.base import LayerTokens
from stages.models.registry import get_spec, list_models, load_model

LARGE = {"clip-l", "dinov2-l", "dinov2-g", "sam-l", "sam-h", "mae-l", "mae-h", "vit-l"}


def _check_contract(name: str) -> None:
    """Build the random-init architecture on the meta device (shapes only, no memory) and run one batch."""
    spec = get_spec(name)
    with torch.device("meta"):
        model = load_model(name, pretrained=False)
        tokens = model(torch.zeros(2, 3, *spec.input_size))
    info = model.info
    assert info.model_id == name and info.weights == "random-init"
    assert info.n_layers == spec.n_layers == len(info.layer_names) == len(tokens)
    assert info.n_channels == spec.widths and info.preprocessing.size == spec.input_size
    assert not model.training and not any(parameter.requires_grad for parameter in model.parameters())
    for token, width, grid in zip(tokens, spec.widths, spec.grids):
        assert isinstance(token, LayerTokens)
        assert tuple(token.local.shape) == (2, width, grid, grid) and tuple(token.global_.shape) == (2, width)


@pytest.mark.parametrize("name", [spec.name for spec in list_models() if spec.name not in LARGE])
def test_spec_matches_architecture(name: str) -> None:
    _check_contract(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_spec_matches_architecture(name: str) -> None:
    _check_contract(name)


def test_registry_names_and_families() -> None:
    names = [spec.name for spec in list_models()]
    assert len(names) == len(set(names))
    assert {"clip", "clip-l", "dinov2", "dinov2-s", "dinov2_small_imgfocus", "dinov2-l", "dinov2-g", "sam", "sam-l",
            "sam-h", "mae", "mae-l", "mae-h", "vit", "vit-l", "mocov3", "mobilenet_v2", "efficientnet_lite0"} == set(names)
    assert {spec.family for spec in list_models()} == {"clip", "dinov2", "sam", "mae", "vit", "mocov3", "cnn"}


def test_reference_preprocessing_switch() -> None:
    with torch.device("meta"):
        own = load_model("clip", pretrained=False).info.preprocessing
        reference = load_model("clip", pretrained=False, reference_preprocessing=True).info.preprocessing
        sam = load_model("sam", pretrained=False, reference_preprocessing=True).info.preprocessing
    assert own.mean == (0.48145466, 0.4578275, 0.40821073) and reference.mean == (0.485, 0.456, 0.406)
    assert (reference.size, reference.resize, reference.interpolation) == ((224, 224), "squash", "bicubic")
    assert sam.size == (1024, 1024) and sam.mean == (0.485, 0.456, 0.406)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown model 'clip-xl'; valid names: clip, clip-l, .*mobilenet_v2, efficientnet_lite0; or timm:<name>"):
        load_model("clip-xl")
    with pytest.raises(InvalidInputError, match="unknown model 'onnx:x'"):
        load_model("onnx:x")
    with pytest.raises(InvalidInputError, match="names no model after timm:"):
        load_model("timm:")


def test_models_command_lists_static_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    records = {record["name"]: record for record in json.loads(capsys.readouterr().out)}
    assert records["mobilenet_v2"]["n_layers"] == 19 and records["mobilenet_v2"]["grids"][0] == 112
    assert records["sam"]["input_size"] == [1024, 1024] and records["clip"]["widths"] == [768] * 12
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert "dinov2-g" in table and "40x1536" in table and "112..7" in table and "timm:<name>" in table
