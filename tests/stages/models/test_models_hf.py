"""transformers families on small random configs: tokens match the library's own hidden states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel,
    SamVisionConfig, SamVisionModel, ViTConfig, ViTMAEConfig, ViTMAEModel, ViTModel, BertConfig,
)

from cache.errors import InvalidInputError, MissingInputError, WeightsUnavailableError
from cache.provenance import hash_file, hash_strings
from stages.models.hf_backbones import wrap_hf_model
from stages.models.registry import load_model

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)


def _small_models() -> dict[str, tuple[torch.nn.Module, int, int]]:
    """family -> (module, input size, patch size), randomly initialised and seeded."""
    torch.manual_seed(0)
    return {
        "clip": (CLIPVisionModel(CLIPVisionConfig(intermediate_size=64, image_size=32, patch_size=8, **SMALL)), 32, 8),
        "dinov2": (Dinov2Model(Dinov2Config(image_size=28, patch_size=14, **SMALL)), 28, 14),
        "dinov2_reg": (Dinov2WithRegistersModel(Dinov2WithRegistersConfig(image_size=28, patch_size=14, num_register_tokens=4, **SMALL)), 28, 14),
        "mae": (ViTMAEModel(ViTMAEConfig(intermediate_size=64, image_size=32, patch_size=8, mask_ratio=0.0, **SMALL)), 32, 8),
        "vit": (ViTModel(ViTConfig(intermediate_size=64, image_size=32, patch_size=8, **SMALL), add_pooling_layer=False), 32, 8),
        "sam": (SamVisionModel(SamVisionConfig(output_channels=16, image_size=64, patch_size=8, window_size=4,
                                               global_attn_indexes=[1], mlp_dim=64, initializer_range=0.02, **SMALL)), 64, 8),
    }


@pytest.fixture(scope="module")
def small_models() -> dict[str, tuple[torch.nn.Module, int, int]]:
    return _small_models()


@pytest.mark.parametrize("family", ["clip", "dinov2", "dinov2_reg", "mae", "vit", "sam"])
def test_tokens_equal_library_hidden_states(small_models: dict, family: str) -> None:
    module, size, patch = small_models[family]
    model = wrap_hf_model(module, model_id=f"small-{family}")
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = model(pixels)
    grid = size // patch
    assert model.info.n_layers == 2 and model.info.n_channels == (32, 32) and len(tokens) == 2
    kwargs = {"noise": torch.arange(grid * grid, dtype=torch.float32).expand(2, -1)} if family == "mae" else {}
    with torch.no_grad():
        hidden = module(pixel_values=pixels, output_hidden_states=True, **kwargs).hidden_states[1:]
    n_prefix = {"sam": 0, "dinov2_reg": 5}.get(family, 1)
    for layer, (token, state) in enumerate(zip(tokens, hidden)):
        assert token.local.shape == (2, 32, grid, grid) and token.global_.shape == (2, 32)
        if family == "sam":  # (B, h, w, C) windowed-block output, no class token
            expected_local = state.permute(0, 3, 1, 2)
            expected_global = expected_local.mean(dim=(2, 3))
        else:
            expected_local = state[:, n_prefix:].reshape(2, grid, grid, 32).permute(0, 3, 1, 2)
            expected_global = state[:, 0]
        torch.testing.assert_close(token.local, expected_local, msg=f"layer {layer} local")
        torch.testing.assert_close(token.global_, expected_global, msg=f"layer {layer} global")
    other = model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2)))
    assert all(not torch.allclose(a.local, b.local) and not torch.allclose(a.global_, b.global_) for a, b in zip(tokens, other))
    assert not any(parameter.requires_grad for parameter in model.parameters())
    model.train()
    assert not module.training


def test_mae_tokens_are_in_spatial_order(small_models: dict) -> None:
    """Oracle 1: a default (random-shuffle) run un-shuffled with the library's ids_restore equals our tokens.
    Oracle 2: changing one corner patch of the image changes the first block's tokens most at that corner."""
    module, size, patch = small_models["mae"]
    model = wrap_hf_model(module, model_id="small-mae")
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    tokens = model(pixels)
    torch.manual_seed(5)
    with torch.no_grad():
        shuffled = module(pixel_values=pixels, output_hidden_states=True)
    assert not torch.equal(shuffled.ids_restore, torch.arange(16).expand(1, -1))
    restore = shuffled.ids_restore.unsqueeze(-1).expand(-1, -1, 32)
    for token, state in zip(tokens, shuffled.hidden_states[1:]):
        unshuffled = torch.gather(state[:, 1:], 1, restore).reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
        torch.testing.assert_close(token.local, unshuffled, atol=1e-5, rtol=1e-4)
    changed = pixels.clone()
    changed[..., size - patch:, size - patch:] += 3.0  # bottom-right patch
    difference = (model(changed)[0].local - tokens[0].local).norm(dim=1)[0]
    assert difference.argmax().item() == difference.numel() - 1


def test_local_directory_loads_offline_with_file_hash(tmp_path: Path, small_models: dict) -> None:
    module, size, _ = small_models["dinov2"]
    module.save_pretrained(tmp_path / "tiny-dinov2")
    model = load_model(f"hf:{tmp_path / 'tiny-dinov2'}")
    weights_file = tmp_path / "tiny-dinov2" / "model.safetensors"
    assert model.info.weights == "sha256:" + hash_strings([f"model.safetensors:{hash_file(str(weights_file))}"])
    assert model.info.preprocessing.size == (224, 224) and model.info.extra["model_type"] == "dinov2"
    pixels = torch.randn(1, 3, size, size)
    torch.testing.assert_close(model(pixels)[1].global_, wrap_hf_model(module, model_id="x")(pixels)[1].global_)
    random = load_model(f"hf:{tmp_path / 'tiny-dinov2'}", pretrained=False)
    assert random.info.weights == "random-init" and random.info.n_channels == (32, 32)


def test_reference_preprocessing_and_mae_settings() -> None:
    with torch.device("meta"):  # architecture and settings only: no weights initialised
        model = load_model("mae", pretrained=False, reference_preprocessing=True)
    prep = model.info.preprocessing
    assert (prep.size, prep.mean, prep.resize, prep.interpolation) == ((224, 224), (0.485, 0.456, 0.406), "squash", "bicubic")
    assert model.info.extra["mask_ratio"] == 0.0 and model.backbone.config.mask_ratio == 0.0


def test_missing_weights_offline_is_one_clear_line() -> None:
    with pytest.raises(WeightsUnavailableError) as caught:
        load_model("clip")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("clip:")
    assert "huggingface-cli download openai/clip-vit-base-patch16" in message and "hf:<dir>" in message


def test_bad_hf_ids(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="does not exist"):
        load_model(f"hf:{tmp_path / 'absent'}")
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path / "bert")
    with pytest.raises(InvalidInputError, match="model_type 'bert' is not supported; supported: clip"):
        load_model(f"hf:{tmp_path / 'bert'}", pretrained=False)
    with pytest.raises(InvalidInputError, match="mocov3 only"):
        load_model("clip", checkpoint=str(tmp_path / "x.pth"))


def test_sam_rejects_other_input_sizes(small_models: dict) -> None:
    model = wrap_hf_model(small_models["sam"][0], model_id="small-sam")
    with pytest.raises(InvalidInputError, match="needs exactly 64x64"):
        model(torch.zeros(1, 3, 32, 32))
    assert model.info.preprocessing.resize == "longest_pad"


def test_vision_part_of_full_clip_and_sam_checkpoints(tmp_path: Path) -> None:
    """Hub ids for CLIP and SAM hold the whole model (text tower, mask decoder): only the vision part loads."""
    from transformers import CLIPConfig, CLIPModel, SamConfig, SamModel

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(intermediate_size=64, image_size=32, patch_size=8, **SMALL), projection_dim=16)).eval()
    sam = SamModel(SamConfig(vision_config=dict(output_channels=16, image_size=64, patch_size=8, window_size=4,
                                                global_attn_indexes=[1], mlp_dim=64, initializer_range=0.02, **SMALL))).eval()
    for name, full, vision, size in (("clip", clip, clip.vision_model, 32), ("sam", sam, sam.vision_encoder, 64)):
        full.save_pretrained(tmp_path / name)
        model = load_model(f"hf:{tmp_path / name}")
        pixels = torch.randn(1, 3, size, size)
        with torch.no_grad():
            hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states
        if name == "clip":
            torch.testing.assert_close(model(pixels)[1].global_, hidden[2][:, 0])
        else:
            torch.testing.assert_close(model(pixels)[1].local, hidden[2].permute(0, 3, 1, 2))


def test_checkpoint_missing_tensors_is_refused(tmp_path: Path, small_models: dict) -> None:
    import json

    small_models["vit"][0].save_pretrained(tmp_path / "vit")
    config_path = tmp_path / "vit" / "config.json"
    config = json.loads(config_path.read_text())
    config["num_hidden_layers"] = 3  # the file holds two blocks
    config_path.write_text(json.dumps(config))
    with pytest.raises(InvalidInputError, match=r"has no weights for \d+ tensors of ViTModel \(.*layers?\.2\."):
        load_model(f"hf:{tmp_path / 'vit'}")


def test_processor_config_sets_mean_std_and_interpolation(tmp_path: Path, small_models: dict) -> None:
    import json

    small_models["vit"][0].save_pretrained(tmp_path / "deit-like")
    processor = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3}
    (tmp_path / "deit-like" / "preprocessor_config.json").write_text(json.dumps(processor))
    prep = load_model(f"hf:{tmp_path / 'deit-like'}").info.preprocessing
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225) and prep.interpolation == "bicubic"
    assert prep.size == (32, 32) and prep.resize == "squash"
    plain = load_model(f"hf:{tmp_path / 'deit-like'}", reference_preprocessing=True).info.preprocessing
    assert plain.size == (224, 224) and plain.interpolation == "bicubic"


def test_unreachable_hub_fails_at_once_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """With HF_HUB_OFFLINE unset but no route to the hub, an uncached model fails in one line, at once."""
    import socket
    import time

    from huggingface_hub import constants

    from stages.models.fetch import hub_reachable

    with socket.socket() as listener:                      # a port nobody listens on: connection refused
        listener.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    hub_reachable.cache_clear()
    started = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="^clip: .*huggingface-cli download"):
        load_model("clip")
    assert time.perf_counter() - started < 10
    assert not hub_reachable(closed)
    with socket.socket() as listener:                      # a listening port counts as reachable
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert hub_reachable(f"http://127.0.0.1:{listener.getsockname()[1]}")
