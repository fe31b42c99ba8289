"""The result of a trained fit: per-vertex table, scores, weights and per-epoch metrics.

:func:`build_fit_result` turns a trained model and its held-out predictions into a
:class:`TrainedFit`, a :class:`~stages.fit.result.FitResult` that also carries the
model weights and the metric history. Its ``save`` writes the weights file
(:mod:`stages.fit.weights_file`) and ``metrics.jsonl`` first and the per-vertex table
and ``fit.json`` last, so a folder with ``fit.json`` is always complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.jsondata import to_json_data
from cache.provenance import environment_record
from stages.fit.config import FitConfig
from stages.fit.inputs import store_model_id
from stages.fit.layer_confidence import LayerSets
from stages.fit.metrics import noise_normalised, pearson_r, r2_score
from stages.fit.result import FitResult, layer_summary, layer_weight_column
from stages.fit.significance import benjamini_hochberg, bootstrap_r2, correlation_p_values
from stages.fit.weights_file import subject_weights, write_fit_weights
from stages.subject import Subject

METRICS_FILE = "metrics.jsonl"
#: The held-out split whose predictions the p-values test.
SIGNIFICANCE_SPLIT = "test"


@dataclass
class TrainedFit(FitResult):
    """A FitResult with the trained weights and the per-epoch metric history.

    Attributes:
        weights: the subject's view of the model's state dict (CPU tensors, see
            :func:`~stages.fit.weights_file.subject_weights`), written as safetensors.
        history: one metrics dict per epoch, written as JSON lines.
    """

    weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def save(self, directory: str | Path) -> Path:
        """Write weights and metrics, then the table and ``fit.json`` (the completion marker)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_fit_weights(directory, self.weights, method=self.method, model=self.model, subject=self.subject,
                          layer_names=self.layer_names)
        lines = directory / (METRICS_FILE + ".partial")
        lines.write_text("".join(json.dumps(row) + "\n" for row in self.history))
        lines.replace(directory / METRICS_FILE)
        return super().save(directory)


def roi_labels(subject: Subject) -> np.ndarray:
    """One ROI name per vertex (the first ROI in the subject's order that holds it; "" for none)."""
    labels = np.full(subject.n_vertices, "", dtype=object)
    for name, mask in reversed(list(subject.rois.items())):
        labels[np.asarray(mask, dtype=bool)] = name
    return labels.astype(str)


def vertex_columns(subject: Subject, layer_weights: np.ndarray) -> dict[str, np.ndarray]:
    """The columns every fit table starts with: vertex identity, ROI, per-layer weights and their summary.

    Args:
        layer_weights: array of shape (n_vertices, n_layers), each row a layer distribution.
    """
    vertices: dict[str, np.ndarray] = {
        "vertex": np.arange(subject.n_vertices, dtype=np.int64),
        "hemisphere": np.asarray(subject.hemisphere).astype(str),
        "fsaverage_index": np.asarray(subject.fsaverage_index, dtype=np.int64),
        "roi": roi_labels(subject),
    }
    for index in range(layer_weights.shape[1]):
        vertices[layer_weight_column(index)] = layer_weights[:, index].astype(np.float32)
    vertices.update(layer_summary(layer_weights))
    return vertices


def score_columns(predictions: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                  noise_ceiling: np.ndarray | None) -> dict[str, np.ndarray]:
    """``r2_<split>``, ``r_<split>`` and, with a ceiling, ``r2_<split>_nc`` per vertex for each split; with a
    test split of >= 3 images also ``p_value`` (one-sided test that the test prediction correlates with the
    response) and ``q_value`` (Benjamini-Hochberg over the vertices), see :mod:`stages.fit.significance`.

    Args:
        predictions, targets: split name -> array of shape (n_images_split, n_vertices).
        noise_ceiling: optional array of shape (n_vertices,).
    """
    columns: dict[str, np.ndarray] = {}
    for split, prediction in predictions.items():
        columns[f"r2_{split}"] = r2_score(prediction, targets[split])
        columns[f"r_{split}"] = pearson_r(prediction, targets[split])
        if noise_ceiling is not None:
            columns[f"r2_{split}_nc"] = noise_normalised(columns[f"r2_{split}"], noise_ceiling)
    if noise_ceiling is not None:
        columns["noise_ceiling"] = np.asarray(noise_ceiling, dtype=np.float32)
    if SIGNIFICANCE_SPLIT in predictions and len(predictions[SIGNIFICANCE_SPLIT]) >= 3:
        p_values = correlation_p_values(predictions[SIGNIFICANCE_SPLIT], targets[SIGNIFICANCE_SPLIT])
        columns["p_value"] = p_values
        columns["q_value"] = benjamini_hochberg(p_values)
    return columns


def score_replicates(predictions: dict[str, np.ndarray], targets: dict[str, np.ndarray], *,
                     seed: int) -> dict[str, np.ndarray]:
    """``{"r2_test": (n_resamples, n_vertices)}``: test R^2 on bootstrap resamplings of the test images
    (:func:`~stages.fit.significance.bootstrap_r2`); empty without a test split of >= 2 images."""
    if len(predictions.get("test", ())) < 2:
        return {}
    return {"r2_test": bootstrap_r2(predictions["test"], targets["test"], seed=seed)}


def score_summary(columns: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of every score column (NaN-aware), the median noise-normalised scores and, with q-values, the number
    of vertices significant at a false discovery rate of 0.05 (``significant_q05``)."""
    summary: dict[str, float] = {}
    if "q_value" in columns:
        summary["significant_q05"] = int(np.sum(columns["q_value"] <= 0.05))
    for name, values in columns.items():
        if name.startswith(("r2_", "r_")):
            summary[f"mean_{name}"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            if name.endswith("_nc"):
                summary[f"median_{name}"] = float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")
    return summary


def build_fit_result(model: torch.nn.Module, subject: Subject, store: Any, cfg: FitConfig, *,
                     layer_names: tuple[str, ...], predictions: dict[str, np.ndarray],
                     targets: dict[str, np.ndarray], standardisation: Any, history: list[dict[str, Any]],
                     summary: dict[str, Any], subject_index: int = 0,
                     layer_sets: LayerSets | None = None) -> TrainedFit:
    """Assemble the per-vertex table, metrics, config and provenance of a trained FactorTopy fit.

    Args:
        model: the trained model (best epoch's weights loaded).
        subject: the fitted subject.
        store: the feature store it was fitted from (path and provenance are recorded).
        cfg: the resolved training config.
        layer_names: the store layers the model uses, in order.
        predictions, targets: split name -> z-scored arrays of shape (n_images_split, n_vertices).
        standardisation: the training mean/std used to z-score (recorded per vertex).
        history: per-epoch metrics.
        summary: run facts (epochs, timings, device, precision...).
        subject_index: which of the model's subjects ``subject`` is (its read-out and vertices).
        layer_sets: the warm start's layer sets; their columns (``layer_confidence``,
            ``layer_set_size``...) describe the layer the map shows (the argmax of the layer weights).
    """
    with torch.no_grad():
        chosen = model.selections(subject=subject_index)
        weights = chosen.layer_weights.float().cpu().numpy()
        space = chosen.space.float().cpu().numpy()
        scale = chosen.scale.float().cpu().numpy()
        levels = None if chosen.scale_levels is None else chosen.scale_levels.float().cpu().numpy()
    vertices = vertex_columns(subject, weights)
    if layer_sets is not None:
        vertices.update(layer_sets.columns(vertices["layer_argmax"]))
    vertices.update({"space_x": space[:, 0], "space_y": space[:, 1], "scale": scale.astype(np.float32)})
    if levels is not None:
        for index in range(levels.shape[1]):
            vertices[f"scale_level_{index:02d}"] = levels[:, index].astype(np.float32)
    scores = score_columns(predictions, targets, subject.noise_ceiling)
    vertices.update(scores)
    vertices["train_mean"] = standardisation.mean
    vertices["train_std"] = standardisation.std
    replicates = score_replicates(predictions, targets, seed=cfg.seed)
    metrics = {**score_summary(scores), **summary,
               "split_sizes": {name: int(len(rows)) for name, rows in subject.splits.items()},
               "final_epoch": history[-1] if history else {}}
    provenance = {"environment": environment_record(), "store": {"path": str(store.path),
                                                                 "provenance": store.provenance},
                  "subject": {"name": subject.name, "source": dict(subject.source), "split_seed": subject.split_seed,
                              "n_images": subject.n_images, "n_vertices": subject.n_vertices, "mesh": subject.mesh},
                  "seed": cfg.seed}
    return TrainedFit(method="factortopy", subject=subject.name, model=store_model_id(store),
                      layer_names=tuple(layer_names), vertices=vertices, metrics=metrics, config=to_json_data(cfg),
                      provenance=provenance, replicates=replicates,
                      weights=subject_weights(model.state_dict(), subject_index),
                      history=list(history))
