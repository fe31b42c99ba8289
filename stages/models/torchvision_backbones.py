"""CNNs served by ``torchvision``: every block of a ``features`` stack or of a ResNet's layer1..layer4.

The embedded default ``mobilenet_v2`` (``IMAGENET1K_V1``) has 19 blocks, ``features[0..18]``,
on grids 112, 112, 56, 56, 28 (x3), 14 (x7), 7 (x5) at a 224 input. Weights come through
torchvision's own weights enum and torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``);
the SHA-256 of the file is checked against the prefix in torchvision's file name each
time it is loaded (torch hub checks only at download), and recorded as the weights id.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch

from cache.errors import InvalidInputError, WeightsUnavailableError
from cache.provenance import hash_file
from stages.models.base import ModelInfo, Preprocessing
from stages.models.fetch import weights_unavailable_on_failure
from stages.models.preprocess import reference_preprocessing as reference_preset
from stages.models.block_tokens import StemBlocksModel, block_widths


class TorchvisionBackbone(StemBlocksModel):
    """A torchvision CNN run block by block; each block's output map is one :class:`LayerTokens`."""

    def __init__(self, backbone: torch.nn.Module, *, info: ModelInfo) -> None:
        stem, blocks = split_blocks(backbone, model_id=info.model_id)
        super().__init__(backbone, info=info, stem=stem, blocks=[block for _, block in blocks])


def split_blocks(model: torch.nn.Module, *, model_id: str) -> tuple[torch.nn.Module, list[tuple[str, torch.nn.Module]]]:
    """The stem and the named blocks of a CNN: a ``features`` Sequential, or a ResNet's layer1..layer4 blocks."""
    features = getattr(model, "features", None)
    if isinstance(features, torch.nn.Sequential):
        return torch.nn.Identity(), [(f"features.{name}", block) for name, block in features.named_children()]
    stages = [getattr(model, f"layer{index}", None) for index in range(1, 5)]
    stem_parts = [getattr(model, name, None) for name in ("conv1", "bn1", "relu", "maxpool")]
    if all(isinstance(stage, torch.nn.Sequential) for stage in stages) and all(stem_parts):
        stem = torch.nn.Sequential(*stem_parts)
        blocks = [(f"layer{index}.{name}", block) for index, stage in enumerate(stages, 1) for name, block in stage.named_children()]
        return stem, blocks
    raise InvalidInputError(
        f"{model_id}: {type(model).__name__} has neither a `features` Sequential nor ResNet-like layer1..layer4; "
        "supported torchvision CNNs include mobilenet_v2/v3, efficientnet_*, vgg*, densenet*, convnext_*, resnet*, resnext*"
    )


def wrap_torchvision_model(
    module: torch.nn.Module,
    *,
    model_id: str,
    source: str = "",
    weights: str = "random-init",
    preprocessing: Preprocessing | None = None,
) -> TorchvisionBackbone:
    """Wrap an already-built torchvision CNN; widths come from one small dry run (64x64 zeros)."""
    stem, blocks = split_blocks(module, model_id=model_id)
    widths = block_widths(module, stem, [block for _, block in blocks])
    info = ModelInfo(
        model_id=model_id,
        source=source or f"torchvision:{type(module).__name__}",
        weights=weights,
        layer_names=tuple(name for name, _ in blocks),
        n_channels=tuple(widths),
        preprocessing=preprocessing or reference_preset(224),
        extra={"library": "torchvision", "tokens": "block output maps; global token = spatial mean"},
    )
    return TorchvisionBackbone(module, info=info)


def load_torchvision(
    name: str,
    *,
    model_id: str,
    pretrained: bool = True,
    checkpoint: str | None = None,
    reference_preprocessing: bool = False,
) -> TorchvisionBackbone:
    """Build ``torchvision.models.<name>``; ``name.WEIGHTS`` picks a weights entry (default: the enum's DEFAULT)."""
    import torchvision

    if checkpoint is not None:
        raise InvalidInputError(f"{model_id}: --checkpoint applies to mocov3 only")
    builder_name, _, weights_name = name.partition(".")
    available = torchvision.models.list_models(module=torchvision.models)
    if builder_name not in available:
        raise InvalidInputError(
            f"{model_id}: torchvision has no classification model {builder_name!r}; see torchvision.models.list_models()"
        )
    weights_enum = torchvision.models.get_model_weights(builder_name)
    try:
        weights = weights_enum[weights_name] if weights_name else weights_enum.DEFAULT
    except KeyError:
        raise InvalidInputError(
            f"{model_id}: {builder_name} has no weights {weights_name!r}; allowed: {', '.join(w.name for w in weights_enum)}"
        ) from None
    module = torchvision.models.get_model(builder_name, weights=None)
    record = "random-init"
    if pretrained:
        state, record = _load_state_dict(weights, model_id=model_id)
        module.load_state_dict(state)
    prep = reference_preset(224) if reference_preprocessing else _own_preprocessing(weights)
    source = f"torchvision:{builder_name}.{weights.name}"
    return wrap_torchvision_model(module, model_id=model_id, source=source, weights=record, preprocessing=prep)


def _own_preprocessing(weights: object) -> Preprocessing:
    """The weights' own mean/std, crop size and interpolation; the whole image squashed (see ``preprocess``)."""
    transform = weights.transforms()
    size = int(transform.crop_size[0])
    interpolation = "bicubic" if "BICUBIC" in str(transform.interpolation) else "bilinear"
    return Preprocessing(size=(size, size), mean=tuple(transform.mean), std=tuple(transform.std), interpolation=interpolation)


def _load_state_dict(weights: object, *, model_id: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict through torch hub (cache first, else download) and ``sha256:<hex>`` of its file.

    A cached file is hash-checked against torchvision's file name *before* it is read, and
    every read is ``weights_only`` (no pickled code runs, even from a tampered cache); a
    download is hash-checked by torch hub before it enters the cache.
    """
    filename = Path(urlparse(weights.url).path).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    fix = (f"put {filename} (from {weights.url}) into $TORCH_HOME/hub/checkpoints "
           "(for mobilenet_v2: `python -m pipeline.weights`), or use --random-init")
    expected = torch.hub.HASH_REGEX.search(filename)
    if path.is_file():
        digest = hash_file(str(path))
        if expected and not digest.startswith(expected.group(1)):
            raise WeightsUnavailableError(
                f"{model_id}: {path} has SHA-256 {digest[:12]}..., not torchvision's {expected.group(1)}: it is damaged "
                f"or not the published file, and was not loaded; delete it and {fix}")
        with weights_unavailable_on_failure(model_id, f"torchvision {weights} from {path}", fix=f"delete it and {fix}"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        return state, f"sha256:{digest}"
    with weights_unavailable_on_failure(model_id, f"torchvision {weights}", fix=fix):
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    return state, f"sha256:{hash_file(str(path))}"
