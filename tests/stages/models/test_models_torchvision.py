"""torchvision CNNs: mobilenet_v2's 19 blocks, the real offline ImageNet weights, generic ids, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_images

from cache.errors import InvalidInputError, WeightsUnavailableError
from cache.provenance import hash_file
from pipeline.weights import MOBILENET_V2_FILE, install_mobilenet_v2_weights
from stages.models.preprocess import image_to_tensor
from stages.models.registry import get_spec, load_model
from stages.models.torchvision_backbones import wrap_torchvision_model

GRIDS = (112, 112, 56, 56, 28, 28, 28) + (14,) * 7 + (7,) * 5


def _checkpoints() -> Path:
    return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"


def test_random_mobilenet_v2_blocks_match_features_loop() -> None:
    model = load_model("mobilenet_v2", pretrained=False)
    assert model.info.n_layers == 19 and model.info.layer_names[0] == "features.0" and model.info.weights == "random-init"
    assert model.info.n_channels == get_spec("mobilenet_v2").widths
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tokens = model(pixels)
    assert tuple(token.local.shape[-1] for token in tokens) == GRIDS
    hidden = pixels
    with torch.no_grad():
        for token, block in zip(tokens, model.backbone.features):
            hidden = block(hidden)
            torch.testing.assert_close(token.local, hidden)
            torch.testing.assert_close(token.global_, hidden.mean(dim=(2, 3)))
    other = model(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    # random-init activations shrink with depth (batch-norm at identity), so compare relative to scale
    assert all((a.global_ - b.global_).abs().max() > 1e-3 * a.global_.abs().max() for a, b in zip(tokens, other))
    model.train()
    assert not model.backbone.training  # batch-norm statistics never update


def test_real_mobilenet_v2_weights_classify_a_photo() -> None:
    installed = install_mobilenet_v2_weights(_checkpoints())
    model = load_model("mobilenet_v2")
    assert model.info.weights == f"sha256:{hash_file(str(installed))}"
    assert model.info.source == "torchvision:mobilenet_v2.IMAGENET1K_V1"
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    reference = torchvision.models.mobilenet_v2(weights=weights).eval()
    photo = Image.open(load_sample_images().filenames[0])  # china.jpg: a temple roof
    pixels = weights.transforms()(photo).unsqueeze(0)
    with torch.no_grad():
        probabilities = reference(pixels).softmax(dim=1)[0]
        features = reference.features(pixels)
    best = int(probabilities.argmax())
    assert weights.meta["categories"][best] in {"palace", "pagoda", "monastery"} and probabilities[best] > 0.3
    torch.testing.assert_close(model(pixels)[-1].local, features)
    ours = model(image_to_tensor(photo, model.info.preprocessing).unsqueeze(0))
    with torch.no_grad():
        logits = reference.classifier(ours[-1].global_)
    # our own preprocessing (whole image squashed to 224) still sees a temple building
    assert weights.meta["categories"][int(logits.argmax())] in {"palace", "pagoda", "monastery"}


def test_missing_and_corrupted_weights() -> None:
    with pytest.raises(WeightsUnavailableError) as caught:
        load_model("mobilenet_v2")
    message = str(caught.value)
    assert message.startswith("mobilenet_v2:") and "\n" not in message and "python -m pipeline.weights" in message
    _checkpoints().mkdir(parents=True, exist_ok=True)
    source = install_mobilenet_v2_weights(_checkpoints())
    data = bytearray(source.read_bytes())
    data[-1] ^= 0xFF
    (_checkpoints() / MOBILENET_V2_FILE).write_bytes(bytes(data))
    with pytest.raises(WeightsUnavailableError, match="does not match|not torchvision's"):
        load_model("mobilenet_v2")


class _Payload:
    """Unpickling this runs ``touch <marker>``: the code a tampered weights file would smuggle in."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_cached_weights_file_runs_nothing_and_names_the_file(tmp_path) -> None:
    """A pickle payload under torchvision's file name in the torch hub cache: the hash is checked before any
    read, so nothing runs, and the one-line message says which file to delete."""
    marker = tmp_path / "payload-ran"
    _checkpoints().mkdir(parents=True, exist_ok=True)
    cached = _checkpoints() / MOBILENET_V2_FILE
    torch.save({"features.0.0.weight": _Payload(marker)}, cached)
    with pytest.raises(WeightsUnavailableError) as caught:
        load_model("mobilenet_v2")
    message = str(caught.value)
    assert not marker.exists()
    assert "\n" not in message and str(cached) in message and "delete it" in message and "not loaded" in message


def test_generic_resnet_blocks() -> None:
    model = load_model("torchvision:resnet18", pretrained=False)
    assert model.info.layer_names == tuple(f"layer{stage}.{block}" for stage in range(1, 5) for block in range(2))
    tokens = model(torch.randn(1, 3, 224, 224))
    assert [token.local.shape[-1] for token in tokens] == [56, 56, 28, 28, 14, 14, 7, 7]
    assert model.info.n_channels == (64, 64, 128, 128, 256, 256, 512, 512)


def test_generic_torchvision_errors() -> None:
    with pytest.raises(InvalidInputError, match="no classification model 'resnet7'"):
        load_model("torchvision:resnet7", pretrained=False)
    with pytest.raises(InvalidInputError, match="has no weights 'IMAGENET9'; allowed: IMAGENET1K_V1"):
        load_model("torchvision:mobilenet_v2.IMAGENET9", pretrained=False)
    with pytest.raises(InvalidInputError, match="neither a `features` Sequential nor ResNet-like"):
        wrap_torchvision_model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), model_id="toy")
