"""MoCo v3 ViT-B/16 from the official checkpoint file, served by timm's ``VisionTransformer``.

The official release (``vit-b-300ep.pth.tar`` from https://github.com/facebookresearch/moco-v3)
is a dict whose ``state_dict`` holds the base encoder under ``module.base_encoder.``
(plus the momentum encoder and predictor, which are ignored). The base encoder's
``head.*`` is the projection MLP of pre-training, also dropped. The rest must match timm's
``vit_base_patch16_224`` exactly (strict check); MoCo v3's fixed sin-cos position
embedding is stored in the checkpoint, so it loads like any other tensor.
The file is read with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cache.errors import InvalidInputError, MissingInputError, WeightsUnavailableError
from cache.provenance import hash_file
from stages.models.base import Preprocessing
from stages.models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from stages.models.timm_backbones import TimmBackbone, finish_timm

CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar"
ENCODER_PREFIX = "module.base_encoder."


def load_mocov3(
    architecture: str = "vit_base_patch16_224",
    *,
    model_id: str = "mocov3",
    pretrained: bool = True,
    checkpoint: str | None = None,
    reference_preprocessing: bool = False,
) -> TimmBackbone:
    """A frozen MoCo v3 ViT built as timm ``architecture`` (any timm ViT whose keys match the checkpoint).

    ``pretrained=False`` gives a random-init model of the same architecture (no file needed).
    """
    import timm

    if pretrained and checkpoint is None:
        raise WeightsUnavailableError(
            f"{model_id}: needs the official MoCo v3 checkpoint file; download {CHECKPOINT_URL} "
            "and pass it with --checkpoint PATH (or use --random-init)"
        )
    module = timm.create_model(architecture, pretrained=False, num_classes=0)
    weights = "random-init"
    if pretrained:
        path = Path(checkpoint).expanduser()
        module.load_state_dict(read_encoder_state(path, model_id=model_id, expected=module.state_dict()))
        weights = f"sha256:{hash_file(str(path))}"
    prep = Preprocessing(size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear")
    return finish_timm(module, model_id=model_id, source=f"mocov3:{checkpoint or architecture}", weights=weights,
                       reference_preprocessing=reference_preprocessing, preprocessing=prep,
                       extra={"architecture": architecture})


def read_encoder_state(path: Path, *, model_id: str, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base encoder's tensors from a MoCo v3 checkpoint, keys and shapes checked against ``expected``."""
    if not path.is_file():
        raise MissingInputError(f"{model_id}: checkpoint {path} does not exist; download {CHECKPOINT_URL}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for unusable files
        raise InvalidInputError(f"{model_id}: {path} is not a loadable weights-only torch checkpoint ({error})") from error
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise InvalidInputError(f"{model_id}: {path} holds no state dict; expected the official MoCo v3 checkpoint")
    encoder = {
        key[len(ENCODER_PREFIX):]: value for key, value in state.items()
        if key.startswith(ENCODER_PREFIX) and not key.startswith(ENCODER_PREFIX + "head.")
    }
    if not encoder:
        raise InvalidInputError(f"{model_id}: {path} has no keys starting with {ENCODER_PREFIX!r}; expected the official MoCo v3 checkpoint")
    missing = sorted(set(expected) - set(encoder))
    unexpected = sorted(set(encoder) - set(expected))
    wrong_shape = sorted(key for key in set(encoder) & set(expected) if encoder[key].shape != expected[key].shape)
    if missing or unexpected or wrong_shape:
        parts = [f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if keys]
        raise InvalidInputError(f"{model_id}: {path} does not match the architecture; " + "; ".join(parts))
    return encoder
