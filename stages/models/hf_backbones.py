"""Vision transformers served by Hugging Face ``transformers``: CLIP, DINOv2, SAM, MAE, ViT.

Tokens are the outputs of every encoder block, captured by forward hooks on the block
list: the hidden states *before* any final layer norm (CLIP's ``post_layernorm``,
DINOv2/ViT/MAE's ``layernorm``), identical to the library's ``hidden_states[1:]``.
ViTMAE shuffles patches even at mask ratio 0; the mask ratio is forced to 0 and the
shuffling noise is fixed to ``arange`` so the permutation is the identity and tokens
stay in spatial order. SAM's windowed blocks return (n_images, h, w, n_channels) grids.
Weights never come from remote code (``trust_remote_code`` is never set).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from cache.errors import InvalidInputError, MissingInputError
from cache.provenance import hash_file, hash_strings
from stages.models.base import LayerTokens, ModelInfo, Preprocessing
from stages.models.fetch import hub_commit, hub_offline, weights_unavailable_on_failure
from stages.models.preprocess import CLIP_MEAN, CLIP_STD, HALF, IMAGENET_MEAN, IMAGENET_STD
from stages.models.preprocess import reference_preprocessing as reference_preset
from stages.models.block_tokens import FrozenFeatureModel, first_output, grid_tokens, sequence_tokens


@dataclass(frozen=True)
class HfFamily:
    """How one ``model_type`` is built, fed and read.

    Attributes:
        family: short family name (``"clip"``, ``"dinov2"``, ...).
        model_class, config_class: names in ``transformers``.
        preprocessing: the model's own input transform, from its config.
        has_class_token: whether token 0 is a class token (else the global token is the spatial mean).
        channels_last: blocks output (n_images, h, w, n_channels) grids instead of sequences.
        config_overrides: config values forced whatever the checkpoint says (MAE's mask ratio 0).
        init_kwargs: model constructor arguments (ViT without its pooler).
        random_init_overrides: config values for random init only (SAM's vision config defaults to
            an initializer range of 1e-10, which gives all-zero tokens; the full SAM model uses 0.02).
        fixed_size: the input must equal ``config.image_size`` (no position-embedding interpolation).
        interpolate_flag: the forward takes ``interpolate_pos_encoding`` (needed for other input sizes).
        identity_noise: pass ``noise = arange`` so MAE's patch shuffle is the identity permutation.
    """

    family: str
    model_class: str
    config_class: str
    preprocessing: Callable[[Any], Preprocessing]
    has_class_token: bool = True
    channels_last: bool = False
    config_overrides: dict[str, Any] = field(default_factory=dict)
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    random_init_overrides: dict[str, Any] = field(default_factory=dict)
    fixed_size: bool = False
    interpolate_flag: bool = False
    identity_noise: bool = False


def _clip_prep(config: Any) -> Preprocessing:
    return Preprocessing(size=(config.image_size,) * 2, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic")


def _dinov2_prep(config: Any) -> Preprocessing:
    # Hub configs say 518 (the pre-training size); the released processor feeds 224.
    return Preprocessing(size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")


def _sam_prep(config: Any) -> Preprocessing:
    return Preprocessing(size=(config.image_size,) * 2, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         resize="longest_pad", interpolation="bilinear")


def _imagenet_prep(config: Any) -> Preprocessing:
    return Preprocessing(size=(config.image_size,) * 2, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear")


def _half_prep(config: Any) -> Preprocessing:
    return Preprocessing(size=(config.image_size,) * 2, mean=HALF, std=HALF, interpolation="bilinear")


_CLIP = HfFamily("clip", "CLIPVisionModel", "CLIPVisionConfig", _clip_prep, interpolate_flag=True)
_SAM = HfFamily("sam", "SamVisionModel", "SamVisionConfig", _sam_prep, has_class_token=False, channels_last=True,
                fixed_size=True, random_init_overrides={"initializer_range": 0.02})
#: Supported ``model_type`` values (what AutoConfig reports) and how each is served.
FAMILIES: dict[str, HfFamily] = {
    "clip": _CLIP,
    "clip_vision_model": _CLIP,
    "dinov2": HfFamily("dinov2", "Dinov2Model", "Dinov2Config", _dinov2_prep),
    "dinov2_with_registers": HfFamily("dinov2", "Dinov2WithRegistersModel", "Dinov2WithRegistersConfig", _dinov2_prep),
    "sam": _SAM,
    "sam_vision_model": _SAM,
    "vit_mae": HfFamily("mae", "ViTMAEModel", "ViTMAEConfig", _imagenet_prep, config_overrides={"mask_ratio": 0.0},
                        interpolate_flag=True, identity_noise=True),
    "vit": HfFamily("vit", "ViTModel", "ViTConfig", _half_prep, init_kwargs={"add_pooling_layer": False},
                    interpolate_flag=True),
}


class HfBackbone(FrozenFeatureModel):
    """A ``transformers`` vision encoder yielding one :class:`LayerTokens` per encoder block."""

    def __init__(self, backbone: torch.nn.Module, *, family: HfFamily, info: ModelInfo) -> None:
        super().__init__(backbone)
        self.family = family
        self.info = info
        config = backbone.config
        self._patch = int(config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0])
        self._n_prefix = (1 if family.has_class_token else 0) + int(getattr(config, "num_register_tokens", 0) or 0)
        self._blocks = list(_block_list(backbone, config.num_hidden_layers))

    def block_tokens(self, pixels: torch.Tensor) -> list[LayerTokens]:
        config = self.backbone.config
        height, width = pixels.shape[-2:]
        size = config.image_size
        kwargs: dict[str, Any] = {}
        if self.family.fixed_size and (height, width) != (size, size):
            raise InvalidInputError(f"{self.info.model_id}: input {height}x{width}; this model needs exactly {size}x{size}")
        if self.family.identity_noise:
            n_patches = (height // self._patch) * (width // self._patch)
            kwargs["noise"] = torch.arange(n_patches, dtype=torch.float32, device=pixels.device).expand(len(pixels), -1)
        if self.family.interpolate_flag and (height, width) != (size, size):
            kwargs["interpolate_pos_encoding"] = True
        outputs: list[torch.Tensor] = []
        hooks = [block.register_forward_hook(lambda module, inputs, output: outputs.append(first_output(output)))
                 for block in self._blocks]
        try:
            self.backbone(pixel_values=pixels, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        if self.family.channels_last:
            return [grid_tokens(hidden, channels_last=True) for hidden in outputs]
        grid = (height // self._patch, width // self._patch)
        class_index = 0 if self.family.has_class_token else None
        return [sequence_tokens(hidden, grid=grid, n_prefix=self._n_prefix, class_index=class_index) for hidden in outputs]


def wrap_hf_model(
    module: torch.nn.Module,
    *,
    model_id: str,
    source: str = "",
    weights: str = "random-init",
    preprocessing: Preprocessing | None = None,
) -> HfBackbone:
    """Wrap an already-built ``transformers`` vision model (e.g. one made from a small config in a test).

    ``module.config.model_type`` picks the family (one of :data:`FAMILIES`); ``preprocessing``
    defaults to the family's own.
    """
    config = module.config
    family = _family(config.model_type, model_id)
    n_layers = int(config.num_hidden_layers)
    info = ModelInfo(
        model_id=model_id,
        source=source or f"transformers:{type(module).__name__}",
        weights=weights,
        layer_names=tuple(f"block{index:02d}" for index in range(n_layers)),
        n_channels=(int(config.hidden_size),) * n_layers,
        preprocessing=preprocessing or family.preprocessing(config),
        extra={"library": "transformers", "model_type": config.model_type, "tokens": "block outputs before the final norm",
               **family.config_overrides},
    )
    return HfBackbone(module, family=family, info=info)


def load_hf(
    source: str,
    *,
    model_id: str,
    pretrained: bool = True,
    checkpoint: str | None = None,
    reference_preprocessing: bool = False,
    model_type: str | None = None,
    config: dict[str, Any] | None = None,
) -> HfBackbone:
    """Load a vision encoder from a hub id or a local directory.

    Named models pass ``model_type`` and ``config`` (the architecture's hyper-parameters), so
    ``pretrained=False`` builds a random-init model without any download; ``hf:<id>`` models
    read the type from the config (the local directory or the hub cache).
    """
    import transformers

    if checkpoint is not None:
        raise InvalidInputError(f"{model_id}: --checkpoint applies to mocov3 only; pass a local directory as hf:<dir>")
    is_local = Path(source).expanduser().is_dir()
    if not is_local and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise MissingInputError(f"{model_id}: directory {source} does not exist; pass hf:<existing dir> or hf:<owner>/<name>")
    source = str(Path(source).expanduser()) if is_local else source
    fix = (f"on a connected machine run `huggingface-cli download {source}` with HF_HOME set to the cache "
           "this machine uses, or pass a local directory as hf:<dir>")
    offline = hub_offline() and not is_local
    with weights_unavailable_on_failure(model_id, source, fix=fix):
        if model_type is None:
            model_type = transformers.AutoConfig.from_pretrained(source, local_files_only=offline).model_type
        family = _family(model_type, model_id)
        model_class = getattr(transformers, family.model_class)
        config_class = getattr(transformers, family.config_class)
        if pretrained:
            with quiet_transformers():
                module, loading = model_class.from_pretrained(
                    source, local_files_only=offline, output_loading_info=True,
                    **family.config_overrides, **family.init_kwargs,
                )
            if loading["missing_keys"]:
                missing = sorted(loading["missing_keys"])
                raise InvalidInputError(
                    f"{model_id}: {source} has no weights for {len(missing)} tensors of {family.model_class} "
                    f"({', '.join(missing[:4])}...); it is not a {family.family} checkpoint of this architecture"
                )
        else:
            built = config_class(**config) if config is not None else config_class.from_pretrained(source, local_files_only=offline)
            for key, value in {**family.config_overrides, **family.random_init_overrides}.items():
                setattr(built, key, value)
            module = model_class(built, **family.init_kwargs)
    weights = _weights_record(source, module, is_local=is_local) if pretrained else "random-init"
    prep = family.preprocessing(module.config)
    if reference_preprocessing:
        prep = _reference(family, module.config)
    elif pretrained:  # random init never reads the hub
        prep = _with_processor_values(prep, source, offline=offline)
    return wrap_hf_model(module, model_id=model_id, source=f"transformers:{source}", weights=weights, preprocessing=prep)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the load report and progress bars while a checkpoint loads.

    A full SAM or CLIP checkpoint holds the prompt/mask decoder or text tower too; their keys
    are reported as unexpected by design. Missing keys are checked by the caller instead.
    """
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()


def _with_processor_values(prep: Preprocessing, source: str, *, offline: bool) -> Preprocessing:
    """``prep`` with the mean/std and interpolation of the checkpoint's ``preprocessor_config.json``, when it has one.

    Checkpoints of one ``model_type`` differ here (a DeiT is a ``vit`` with ImageNet mean/std);
    the input size and geometry stay the family's.
    """
    path = Path(source) / "preprocessor_config.json"
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(source, "preprocessor_config.json", local_files_only=offline))
        except Exception:  # no processor file in the repository, or not cached offline: keep the family's values
            return prep
    values = json.loads(path.read_text(encoding="utf-8"))
    mean, std = values.get("image_mean"), values.get("image_std")
    interpolation = {2: "bilinear", 3: "bicubic"}.get(values.get("resample"), prep.interpolation)
    if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
        prep = replace(prep, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))
    return replace(prep, interpolation=interpolation)


def _reference(family: HfFamily, config: Any) -> Preprocessing:
    """The reference preset at 224, or at SAM's fixed input size."""
    return reference_preset(config.image_size if family.fixed_size else 224)


def _family(model_type: str, model_id: str) -> HfFamily:
    if model_type not in FAMILIES:
        raise InvalidInputError(
            f"{model_id}: transformers model_type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def _block_list(module: torch.nn.Module, n_layers: int) -> torch.nn.ModuleList:
    """The encoder's block list: the first ``ModuleList`` holding ``n_layers`` modules."""
    for candidate in module.modules():
        if isinstance(candidate, torch.nn.ModuleList) and len(candidate) == n_layers:
            return candidate
    raise RuntimeError(f"{type(module).__name__}: no list of {n_layers} encoder blocks found")


def _weights_record(source: str, module: torch.nn.Module, *, is_local: bool) -> str:
    """SHA-256 over a local directory's weight files, else the hub commit the weights came from."""
    if is_local:
        files = sorted(path for pattern in ("*.safetensors", "*.bin") for path in Path(source).glob(pattern))
        return "sha256:" + hash_strings(f"{path.name}:{hash_file(str(path))}" for path in files)
    commit = getattr(module.config, "_commit_hash", None) or hub_commit(source, "config.json")
    return f"{source}@{commit or 'unknown-revision'}"
