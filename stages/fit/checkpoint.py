"""Per-epoch training checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``epoch-NNNN.safetensors`` (model, best model so far,
optimiser moments, gradient scaler and RNG states) and ``checkpoint.json`` (step,
epoch, early-stopping state, metric history, the fit's identity). The JSON is
written last, by atomic rename, and names its tensor file, so a kill at any moment
leaves either the previous complete checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from cache.errors import ConfigError, InvalidInputError, StoreMismatchError

CHECKPOINT_JSON = "checkpoint.json"


@dataclass
class TrainState:
    """Everything about a fit's progress that is not a tensor.

    Attributes:
        epoch: epochs completed.
        step: optimiser steps taken.
        best_val_r2: best mean validation R^2 so far (-inf before the first epoch).
        best_epoch: the epoch that reached it (0 = none yet).
        history: one metrics dict per completed epoch.
        stopped_early: whether early stopping ended the fit.
        notes: facts from before the first epoch (e.g. the warm start's timing and losses).
        layer_sets: per subject, the warm start's layer sets
            (:meth:`stages.fit.layer_confidence.LayerSets.to_json`); empty when none were made.
    """

    epoch: int = 0
    step: int = 0
    best_val_r2: float = float("-inf")
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    layer_sets: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(directory: Path, *, state: TrainState, identity: dict[str, Any], model: torch.nn.Module,
                    best_model: dict[str, torch.Tensor], optimiser: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler | None) -> Path:
    """Write the checkpoint of the epoch just completed; returns the JSON path.

    Args:
        directory: the checkpoint folder (created when missing).
        state: progress counters and history.
        identity: what the checkpoint belongs to (layers, subject, config, split digest);
            a resume compares it with the current request.
        model: the live model.
        best_model: state dict of the best model so far (what early stopping returns).
        optimiser: the live optimiser.
        scaler: the fp16 gradient scaler, or ``None``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_model.items()})
    optimiser_state = optimiser.state_dict()
    for param_id, moments in optimiser_state["state"].items():
        for name, value in moments.items():
            tensors[f"optim.{param_id}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda{index}"] = cuda_state
    tensor_name = f"epoch-{state.epoch:04d}.safetensors"
    partial = directory / (tensor_name + ".partial")
    save_file(tensors, str(partial))
    partial.replace(directory / tensor_name)
    record = {"tensors": tensor_name, "state": asdict(state), "identity": identity,
              "param_groups": optimiser_state["param_groups"],
              "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None}
    json_partial = directory / (CHECKPOINT_JSON + ".partial")
    json_partial.write_text(json.dumps(record, indent=1, allow_nan=True))
    json_partial.replace(directory / CHECKPOINT_JSON)
    for old in directory.glob("epoch-*.safetensors"):
        if old.name != tensor_name:
            old.unlink()
    return directory / CHECKPOINT_JSON


def has_checkpoint(directory: Path | None) -> bool:
    """Whether ``directory`` holds a complete checkpoint."""
    return directory is not None and (Path(directory) / CHECKPOINT_JSON).is_file()


def restore_checkpoint(directory: Path, *, identity: dict[str, Any], model: torch.nn.Module,
                       optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
                       ) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """Load a checkpoint into ``model``, ``optimiser`` and ``scaler``; returns the state and best model.

    Raises:
        StoreMismatchError: the checkpoint was made on other layers, another subject or split.
        ConfigError: it was made with another training config.
    """
    directory = Path(directory)
    try:
        record = json.loads((directory / CHECKPOINT_JSON).read_text())
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{directory / CHECKPOINT_JSON} is not valid JSON ({error}); rerun with --restart "
                                f"(or delete {directory}) to start the fit afresh") from error
    _check_identity(directory, record["identity"], identity)
    tensors_path = directory / record["tensors"]
    try:
        tensors = load_file(str(tensors_path))
    except Exception as error:   # safetensors' own error type for a truncated or altered file, or OSError
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise InvalidInputError(f"checkpoint {tensors_path} cannot be read ({reason}): it is truncated or damaged; "
                                f"rerun with --restart to discard it and start the fit afresh") from error
    device = next(model.parameters()).device
    model.load_state_dict({k[len("model."):]: v.to(device) for k, v in tensors.items() if k.startswith("model.")})
    best = {k[len("best."):]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, name = key.split(".", 2)
            moments.setdefault(int(param_id), {})[name] = value
    optimiser.load_state_dict({"state": moments, "param_groups": record["param_groups"]})
    if scaler is not None and record.get("scaler"):
        scaler.load_state_dict(record["scaler"])
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    return TrainState(**record["state"]), best


def _check_identity(directory: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    fix = f"delete {directory} (or pass --restart) to start the fit afresh"
    if saved.get("layer_names") != wanted.get("layer_names"):
        raise StoreMismatchError(
            f"checkpoint {directory} was trained on layers {saved.get('layer_names')} but this fit uses "
            f"{wanted.get('layer_names')}; {fix}")
    for key in sorted(set(saved) | set(wanted)):
        if key in ("layer_names", "config"):
            continue
        if saved.get(key) != wanted.get(key):
            raise StoreMismatchError(f"checkpoint {directory} belongs to another fit: {key} was {saved.get(key)!r}, "
                                     f"now {wanted.get(key)!r}; {fix}")
    differing = _differing_keys(saved.get("config", {}), wanted.get("config", {}))
    if differing:
        raise ConfigError(f"checkpoint {directory} was made with another config (differs in {', '.join(differing)}); {fix}")


def _differing_keys(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differing_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys
