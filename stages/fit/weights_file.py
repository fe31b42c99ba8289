"""The trained fit's weights file, ``weights.safetensors``: its name, its tensor names, writing and reading.

A fit folder holds one subject's view of the FactorTopy state dict (:func:`subject_weights`),
named as a single-subject model's:

================================  ==================================  ================================
tensor                            shape                               role
================================  ==================================  ================================
``local_bottlenecks.<l>.weight``  (n_bottleneck, n_channels_l, 1, 1)  layer l's local 1x1 conv
``global_bottlenecks.<l>.weight`` (n_bottleneck, n_channels_l)        layer l's global linear map
``selectors.<mlp>.<parameter>``   MLP parameters                      space, layer and scale selectors
``readouts.<s>.weight``           (n_vertices, n_bottleneck)          subject s's read-out W
``readouts.<s>.bias``             (n_vertices,)                       subject s's read-out bias
================================  ==================================  ================================

A fit folder's file has one read-out, ``readouts.0`` (a joint fit renames its subject's read-out);
a whole multi-subject state dict has one per subject. The header's metadata records ``method``,
``model``, ``subject`` and ``layer_names`` (a JSON list). :func:`write_fit_weights` writes
``weights.safetensors.partial`` and renames it, so a present file is complete; :func:`read_fit_weights`
reads safetensors only (no pickle) and returns the tensors by role as a :class:`FitWeights`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from cache.errors import InvalidInputError, MissingInputError

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE = "weights.safetensors"

_READOUT = "readouts."
_SELECTORS = "selectors."
_LOCAL = "local_bottlenecks.{}.weight"
_GLOBAL = "global_bottlenecks.{}.weight"
_READOUT_INDEX = re.compile(r"readouts\.(\d+)\.")


@dataclass(frozen=True)
class FitWeights:
    """The tensors of one fit's weights file, by role (float32 arrays; None or empty where the file has none).

    Attributes:
        readout: array of shape (n_vertices, n_bottleneck), the chosen subject's read-out W.
        readout_bias: array of shape (n_vertices,), its bias.
        local_bottlenecks: per layer (in fitted order), array of shape (n_bottleneck, n_channels_l):
            the local 1x1 conv as a matrix.
        global_bottlenecks: per layer, array of shape (n_bottleneck, n_channels_l).
        selectors: parameter name below ``selectors.`` (e.g. ``"layer.head.weight"``) -> array.
    """

    readout: np.ndarray | None = None
    readout_bias: np.ndarray | None = None
    local_bottlenecks: tuple[np.ndarray, ...] = ()
    global_bottlenecks: tuple[np.ndarray, ...] = ()
    selectors: Mapping[str, np.ndarray] = field(default_factory=dict)


def subject_weights(state: Mapping[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """One subject's view of a model's state dict, as a single-subject model's: the shared bottlenecks and
    selectors plus read-out ``index`` renamed ``readouts.0`` (CPU tensors); the other read-outs are left out."""
    own = f"{_READOUT}{index}."
    return {(_READOUT + "0." + key[len(own):] if key.startswith(own) else key): value.detach().cpu()
            for key, value in state.items() if key.startswith(own) or not key.startswith(_READOUT)}


def write_fit_weights(directory: Path, weights: Mapping[str, torch.Tensor], *, method: str, model: str,
                      subject: str, layer_names: Sequence[str]) -> Path:
    """Write ``weights`` (a state dict, e.g. from :func:`subject_weights`) as ``directory/weights.safetensors``.

    The file appears complete or not at all (written beside it, then renamed). Returns its path.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    partial = directory / (WEIGHTS_FILE + ".partial")
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}, str(partial),
              metadata={"method": method, "model": model, "subject": subject,
                        "layer_names": json.dumps(list(layer_names))})
    return partial.replace(directory / WEIGHTS_FILE)


def read_fit_weights(directory: Path, *, subject_index: int = 0) -> FitWeights | None:
    """The tensors of ``directory/weights.safetensors`` by role; None when the folder has no such file
    (ridge fits and planted truths have none).

    Args:
        directory: a fit folder.
        subject_index: whose read-out to return when the file holds several (a multi-subject state
            dict); a fit folder's file holds one, ``readouts.0``.

    Raises:
        InvalidInputError: the file is truncated or not a safetensors file, or it holds read-outs but
            not ``readouts.<subject_index>``.
    """
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        return None
    tensors = _read_tensors(path)
    subjects = sorted({int(match.group(1)) for name in tensors if (match := _READOUT_INDEX.match(name))})
    if subjects and subject_index not in subjects:
        raise InvalidInputError(f"{path} holds the read-outs of subjects {subjects}, not of subject {subject_index}")
    own = f"{_READOUT}{subject_index}."
    return FitWeights(readout=tensors.get(own + "weight"), readout_bias=tensors.get(own + "bias"),
                      local_bottlenecks=tuple(w.reshape(w.shape[0], w.shape[1]) for w in _per_layer(tensors, _LOCAL)),
                      global_bottlenecks=tuple(_per_layer(tensors, _GLOBAL)),
                      selectors={name[len(_SELECTORS):]: tensor for name, tensor in tensors.items()
                                 if name.startswith(_SELECTORS)})


def read_state_dict(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``directory/weights.safetensors`` by its state-dict name (float32 arrays), to rebuild the
    trained model (``stages.fit.predictor``).

    Raises:
        MissingInputError: the folder has no weights file (ridge fits and planted truths have none).
        InvalidInputError: the file is truncated or not a safetensors file.
    """
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: {directory} holds no trained FactorTopy weights")
    return _read_tensors(path)


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise InvalidInputError(f"{path} is not a readable safetensors file ({error}); it is truncated or corrupt: "
                                "delete it and fit again") from None
    return {name: np.asarray(tensor, dtype=np.float32) for name, tensor in tensors.items()}


def _per_layer(tensors: Mapping[str, np.ndarray], pattern: str) -> list[np.ndarray]:
    """``pattern.format(0)``, ``pattern.format(1)``, ... up to the first layer missing."""
    found = []
    while (tensor := tensors.get(pattern.format(len(found)))) is not None:
        found.append(tensor)
    return found
