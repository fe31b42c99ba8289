"""efficientnet_lite0: the packaged state dict maps onto timm's architecture and classifies real photos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import skimage.data
import timm
import torch

from cache.errors import WeightsUnavailableError
from pipeline.weights import EFFICIENTNET_LITE0, install_packaged_weights, packaged_file
from stages.models.packaged_backbones import map_state_dict
from stages.models.preprocess import image_to_tensor
from stages.models.registry import get_spec, load_model


def _checkpoints() -> Path:
    return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"


def test_packaged_tensors_map_one_to_one_onto_timm() -> None:
    packaged = torch.load(packaged_file(EFFICIENTNET_LITE0), map_location="cpu", weights_only=True)
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    mapped = map_state_dict(packaged, target, model_id="efficientnet_lite0")
    assert len(mapped) == 247 and list(mapped) == [name for name in target if not name.endswith("num_batches_tracked")]
    assert mapped["conv_stem.weight"] is packaged["_conv_stem.weight"]
    assert mapped["blocks.0.0.conv_dw.weight"] is packaged["_blocks.0._depthwise_conv.weight"]
    assert mapped["classifier.bias"] is packaged["_fc.bias"]
    shuffled = dict(reversed(list(packaged.items())))
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        map_state_dict(shuffled, target, model_id="efficientnet_lite0")
    with pytest.raises(WeightsUnavailableError, match="246 tensors, the architecture 247"):
        map_state_dict(dict(list(packaged.items())[1:]), target, model_id="efficientnet_lite0")


def test_real_efficientnet_lite0_classifies_the_package_photos() -> None:
    """With ImageNet mean/std at 224 px: chelsea is a cat (281-285), coffee an espresso (967), rocket a missile (657)."""
    install_packaged_weights(EFFICIENTNET_LITE0, _checkpoints())
    model = load_model("efficientnet_lite0")
    assert model.info.weights == f"sha256:{get_spec('efficientnet_lite0').options['sha256']}"
    assert model.info.n_channels == get_spec("efficientnet_lite0").widths and model.info.layer_names[-1] == "conv_head"
    from PIL import Image

    expected = {"chelsea": set(range(281, 286)), "coffee": {967}, "rocket": {657}}
    for name, classes in expected.items():
        photo = Image.fromarray(getattr(skimage.data, name)())
        pixels = image_to_tensor(photo, model.info.preprocessing).unsqueeze(0)
        tokens = model(pixels)
        with torch.no_grad():
            logits = model.backbone.forward_head(tokens[-1].local)
            reference = model.backbone(pixels)
        torch.testing.assert_close(logits, reference)  # the last layer is the classifier's input
        assert int(logits.argmax()) in classes, name
    assert model.info.preprocessing.mean == (0.485, 0.456, 0.406) and model.info.preprocessing.size == (224, 224)


def test_missing_and_damaged_packaged_weights() -> None:
    with pytest.raises(WeightsUnavailableError) as caught:
        load_model("efficientnet_lite0")
    message = str(caught.value)
    assert message.startswith("efficientnet_lite0:") and "\n" not in message and "python -m pipeline.weights" in message
    target = install_packaged_weights(EFFICIENTNET_LITE0, _checkpoints())
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsUnavailableError, match="not the published .*delete it"):
        load_model("efficientnet_lite0")
    assert load_model("efficientnet_lite0", pretrained=False).info.weights == "random-init"
