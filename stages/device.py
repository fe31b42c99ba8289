"""Where the work runs and in what precision: one vocabulary for extraction, training and ridge.

Devices: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

Precisions: ``"auto"``, ``"bf16"``, ``"fp16"``, ``"fp32"`` (no autocast). ``"off"``, stage
one's earlier word for fp32, is still accepted where users type it (``--precision`` /
``--autocast``) and read as ``"fp32"``. ``"auto"`` resolves to bf16 on CUDA devices that
support it, fp16 on older ones, and fp32 on the CPU. An explicit bf16 or fp16 applies on
the CPU only where the caller allows it: stage one allows both (a ViT runs 2-3x faster in
bf16 on CPUs with AMX), training allows bf16 (a FactorTopy step about 30 % faster with AMX;
fp16 would need a gradient scaler the CPU lacks), ridge neither.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import nullcontext
from typing import Any, Literal

import torch

from cache.errors import ConfigError, InvalidInputError

Precision = Literal["auto", "bf16", "fp16", "fp32"]
#: Every precision a config may hold.
PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
#: Earlier spellings still accepted on the command line, with the precision each means.
PRECISION_ALIASES = {"off": "fp32"}
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """The torch device for a device name; ``"auto"`` is CUDA when available, else the CPU.

    Raises:
        ConfigError: ``name`` is not a torch device name.
        InvalidInputError: a CUDA device is asked for on a machine without CUDA.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device {name!r} is not a device name (use auto, cpu, cuda, cuda:N): {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    return device


def parse_precision(word: str) -> str:
    """A precision as users may type it (aliases included), in the one vocabulary of :data:`PRECISIONS`.

    Raises:
        ConfigError: an unknown word, listing the accepted ones.
    """
    word = PRECISION_ALIASES.get(word, word)
    if word not in PRECISIONS:
        raise ConfigError(f"precision {word!r} is not one of {', '.join(PRECISIONS + tuple(PRECISION_ALIASES))}")
    return word


def resolve_precision(precision: str, device: torch.device, *, cpu_autocast: Collection[str]) -> str:
    """The precision actually used on ``device``: ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    ``cpu_autocast``: the explicit precisions that apply on the CPU; any other runs in fp32 there (see the
    module docs).
    """
    precision = parse_precision(precision)
    if device.type != "cuda":
        return precision if precision in cpu_autocast and precision in _AUTOCAST_DTYPES else "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def precision_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision from :func:`resolve_precision`; ``None`` for fp32 (no autocast)."""
    return _AUTOCAST_DTYPES.get(precision)


def autocast_context(device: torch.device, precision: str) -> Any:
    """The ``torch.autocast`` context of a resolved precision on ``device`` (fp32: a no-op context)."""
    dtype = precision_dtype(precision)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
