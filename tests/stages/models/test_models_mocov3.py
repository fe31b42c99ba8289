"""MoCo v3 checkpoint loading, on a tiny timm ViT written as a fake official checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from cache.errors import InvalidInputError, MissingInputError, WeightsUnavailableError
from cache.provenance import hash_file
from stages.models.mocov3 import load_mocov3
from stages.models.registry import load_model

ARCH = "test_vit"


def _write_checkpoint(path: Path, *, drop: str | None = None) -> dict[str, torch.Tensor]:
    """An official-layout checkpoint: base encoder (+ projection head), momentum encoder, predictor."""
    torch.manual_seed(0)
    encoder = timm.create_model(ARCH, pretrained=False, num_classes=0).state_dict()
    state = {f"module.base_encoder.{key}": value for key, value in encoder.items() if key != drop}
    state["module.base_encoder.head.0.weight"] = torch.zeros(8, 64)
    state.update({f"module.momentum_encoder.{key}": value + 1 for key, value in encoder.items()})
    state["module.predictor.0.weight"] = torch.zeros(8, 8)
    torch.save({"epoch": 300, "arch": "vit_base", "state_dict": state, "optimizer": {"lr": 1.5e-4}}, path)
    return encoder


def test_checkpoint_loads_base_encoder(tmp_path: Path) -> None:
    path = tmp_path / "vit-tiny-300ep.pth.tar"
    encoder = _write_checkpoint(path)
    model = load_mocov3(ARCH, checkpoint=str(path))
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(encoder) and all(torch.equal(loaded[key], encoder[key]) for key in encoder)
    assert model.info.weights == f"sha256:{hash_file(str(path))}" and model.info.model_id == "mocov3"
    assert model.info.preprocessing.size == (224, 224) and model.info.preprocessing.mean == (0.485, 0.456, 0.406)
    reference = timm.create_model(ARCH, pretrained=False, num_classes=0).eval()
    reference.load_state_dict(encoder)
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = reference.forward_features(pixels)  # the last block's output after the final norm
    tokens = model(pixels)
    assert len(tokens) == 6 and tokens[-1].local.shape == (1, 64, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(reference.norm(tokens[-1].global_), expected[:, 0])


def test_mismatched_checkpoint_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth.tar"
    _write_checkpoint(path, drop="blocks.0.attn.qkv.weight")
    with pytest.raises(InvalidInputError, match=r"does not match the architecture; missing: blocks\.0\.attn\.qkv\.weight \(1\)"):
        load_mocov3(ARCH, checkpoint=str(path))
    with pytest.raises(InvalidInputError, match="missing: .*wrong shape"), torch.device("meta"):  # tiny into ViT-B/16
        load_model("mocov3", checkpoint=str(tmp_path / "broken.pth.tar"))


def test_bad_checkpoint_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="--checkpoint"):
        load_model("mocov3")
    with pytest.raises(MissingInputError, match="does not exist"):
        load_mocov3(ARCH, checkpoint=str(tmp_path / "absent.pth.tar"))
    (tmp_path / "text.pth.tar").write_text("not a checkpoint")
    with pytest.raises(InvalidInputError, match="not a loadable weights-only torch checkpoint"):
        load_mocov3(ARCH, checkpoint=str(tmp_path / "text.pth.tar"))
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(InvalidInputError, match="no keys starting with 'module.base_encoder.'"):
        load_mocov3(ARCH, checkpoint=str(tmp_path / "other.pth"))
