"""Backbones served by ``timm``: ViTs (every block) and any model with ``forward_intermediates``.

ViT-like models (a ``blocks`` list and prefix tokens) yield every block's output through
timm's own ``forward_intermediates`` with ``norm=False`` (block outputs before the final
norm, as for the transformers families); the class token comes back among the prefix
tokens and register tokens are dropped. Other timm models with ``forward_intermediates``
(ConvNeXt, EfficientNet, ResNet...) yield the feature maps timm lists in ``feature_info``,
with the spatial mean as global token.

Fast tiny model for tests: ``load_model("timm:test_vit", pretrained=False)`` (6 blocks of
64 channels on a 10x10 grid at its 160x160 input; ~0.3 M parameters).
"""

from __future__ import annotations

from typing import Any

import torch

from cache.errors import InvalidInputError
from stages.models.base import LayerTokens, ModelInfo, Preprocessing
from stages.models.fetch import hub_commit, hub_offline, weights_unavailable, weights_unavailable_on_failure
from stages.models.preprocess import reference_preprocessing as reference_preset
from stages.models.block_tokens import FrozenFeatureModel, grid_tokens


class TimmBackbone(FrozenFeatureModel):
    """A timm model yielding one :class:`LayerTokens` per block (ViTs) or per feature stage (others)."""

    def __init__(self, backbone: torch.nn.Module, *, info: ModelInfo) -> None:
        super().__init__(backbone)
        self.info = info
        self._vit_like = is_vit_like(backbone)

    def block_tokens(self, pixels: torch.Tensor) -> list[LayerTokens]:
        if not self._vit_like:
            maps = self.backbone.forward_intermediates(pixels, intermediates_only=True)
            return [grid_tokens(feature_map) for feature_map in maps]
        outputs = self.backbone.forward_intermediates(
            pixels, indices=len(self.backbone.blocks), return_prefix_tokens=True, norm=False,
            output_fmt="NCHW", intermediates_only=True,
        )
        has_class = getattr(self.backbone, "cls_token", None) is not None
        return [grid_tokens(spatial, class_token=prefix[:, 0] if has_class else None) for spatial, prefix in outputs]


def is_vit_like(module: torch.nn.Module) -> bool:
    """Whether a timm model is a plain ViT (a ``blocks`` list, a patch embedding, prefix tokens)."""
    return all(hasattr(module, name) for name in ("blocks", "patch_embed", "num_prefix_tokens"))


def wrap_timm_model(
    module: torch.nn.Module,
    *,
    model_id: str,
    source: str = "",
    weights: str = "random-init",
    preprocessing: Preprocessing | None = None,
    extra: dict[str, Any] | None = None,
) -> TimmBackbone:
    """Wrap an already-built timm model; ``preprocessing`` defaults to its ``pretrained_cfg``'s."""
    if not hasattr(module, "forward_intermediates"):
        raise InvalidInputError(
            f"{model_id}: timm model {type(module).__name__} has no forward_intermediates; "
            "use a ViT or another timm model that provides it (timm >= 1.0)"
        )
    if is_vit_like(module):
        n_layers = len(module.blocks)
        names = tuple(f"blocks.{index}" for index in range(n_layers))
        widths = (int(module.embed_dim),) * n_layers
    else:
        names = tuple(str(entry["module"]) for entry in module.feature_info)
        widths = tuple(int(entry["num_chs"]) for entry in module.feature_info)
    info = ModelInfo(
        model_id=model_id,
        source=source or f"timm:{type(module).__name__}",
        weights=weights,
        layer_names=names,
        n_channels=widths,
        preprocessing=preprocessing or timm_preprocessing(dict(module.pretrained_cfg)),
        extra={"library": "timm", "tokens": "block outputs before the final norm", **(extra or {})},
    )
    return TimmBackbone(module, info=info)


def timm_preprocessing(pretrained_cfg: dict[str, Any]) -> Preprocessing:
    """The model's own mean/std, input size and interpolation; the whole image squashed (see ``preprocess``)."""
    _, height, width = pretrained_cfg.get("input_size", (3, 224, 224))
    interpolation = pretrained_cfg.get("interpolation", "bicubic")
    return Preprocessing(
        size=(int(height), int(width)),
        mean=tuple(pretrained_cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(pretrained_cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=interpolation if interpolation in ("bicubic", "bilinear") else "bicubic",
    )


def load_timm(
    name: str,
    *,
    model_id: str,
    pretrained: bool = True,
    checkpoint: str | None = None,
    reference_preprocessing: bool = False,
) -> TimmBackbone:
    """Create ``timm.create_model(name)`` (a tag after the dot picks the weights) and wrap it."""
    import timm

    if checkpoint is not None:
        raise InvalidInputError(f"{model_id}: --checkpoint applies to mocov3 only")
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:12]}*")[:8]
        raise InvalidInputError(f"{model_id}: timm has no model {name!r}; similar names: {', '.join(close) or 'none'}")
    fix = (f"on a connected machine run `huggingface-cli download timm/{name}` with HF_HOME set to the cache this "
           "machine uses, or use --random-init")
    if pretrained and hub_offline():
        _require_cached(name, model_id=model_id, fix=fix)
    with weights_unavailable_on_failure(model_id, f"timm:{name}", fix=fix):
        module = timm.create_model(name, pretrained=pretrained)
    return finish_timm(module, model_id=model_id, source=f"timm:{name}",
                       weights=_weights_record(module) if pretrained else "random-init",
                       reference_preprocessing=reference_preprocessing)


def finish_timm(
    module: torch.nn.Module,
    *,
    model_id: str,
    source: str,
    weights: str,
    reference_preprocessing: bool,
    preprocessing: Preprocessing | None = None,
    extra: dict[str, Any] | None = None,
) -> TimmBackbone:
    """Wrap a created timm model with ``preprocessing`` (default: its pretrained_cfg's), or with the
    reference preset when asked (a fixed-size ViT then gets its position embedding resampled to 224)."""
    if reference_preprocessing:
        preprocessing = reference_preprocessing_for(module)
    return wrap_timm_model(module, model_id=model_id, source=source, weights=weights, preprocessing=preprocessing, extra=extra)


def reference_preprocessing_for(module: torch.nn.Module) -> Preprocessing:
    """The reference preset at 224; a fixed-size ViT gets its position embedding resampled to 224."""
    if is_vit_like(module) and not getattr(module, "dynamic_img_size", False):
        if tuple(module.patch_embed.img_size) != (224, 224):
            module.set_input_size(img_size=(224, 224))
    return reference_preset(224)


def _require_cached(name: str, *, model_id: str, fix: str) -> None:
    """Fail at once, offline, when none of the model's weight files is in the hub cache."""
    import timm

    repo = timm.get_pretrained_cfg(name)
    hub_id = getattr(repo, "hf_hub_id", None) if repo is not None else None
    if hub_id and not any(hub_commit(hub_id, filename) for filename in ("model.safetensors", "pytorch_model.bin")):
        raise weights_unavailable(model_id, f"timm:{name}", fix=fix, reason=f"HF_HUB_OFFLINE is set and {hub_id} is not cached")


def _weights_record(module: torch.nn.Module) -> str:
    """``<hub id>@<commit>`` of the cached weights when known, else the pretrained tag."""
    cfg = dict(module.pretrained_cfg)
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        commit = hub_commit(hub_id, "model.safetensors") or hub_commit(hub_id, "pytorch_model.bin")
        return f"{hub_id}@{commit or 'unknown-revision'}"
    return f"timm:{cfg.get('architecture')}.{cfg.get('tag')}@{cfg.get('url') or 'unknown-revision'}"
