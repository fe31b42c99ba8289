"""ROI masks from fsaverage label arrays, and vertex selection by ROI or ROI class.

Both the Algonauts and the NSD release label fsaverage vertices per ROI *class*
(``prf-visualrois``, ``floc-faces``...): an integer per vertex (0 = outside) plus
a label -> name table. A subject carries one bool mask per ROI *name* (``V1v``,
``FFA-1``...) over its kept vertices; a class is the union of its ROIs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cache.errors import InvalidInputError

#: The ROI classes of the NSD / Algonauts 2023 releases, in their usual order.
ROI_CLASSES = ("prf-visualrois", "floc-bodies", "floc-faces", "floc-places", "floc-words", "streams")

#: Label -> name of each class as in the NSD data manual's ``<class>.mgz.ctab`` files; used
#: when a release lacks the ``.ctab`` beside its labels.
DEFAULT_ROI_NAMES: dict[str, dict[int, str]] = {
    "prf-visualrois": {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"},
    "floc-bodies": {1: "EBA", 2: "FBA-1", 3: "FBA-2", 4: "mTL-bodies"},
    "floc-faces": {1: "OFA", 2: "FFA-1", 3: "FFA-2", 4: "mTL-faces", 5: "aTL-faces"},
    "floc-places": {1: "OPA", 2: "PPA", 3: "RSC"},
    "floc-words": {1: "OWFA", 2: "VWFA-1", 3: "VWFA-2", 4: "mfs-words", 5: "mTL-words"},
    "streams": {1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral", 6: "lateral",
                7: "parietal"},
}


def roi_masks_from_labels(labels: dict[str, np.ndarray], names: dict[str, dict[int, str]], *,
                          where: dict[str, str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """ROI name -> bool mask and class -> bool mask over the subject's vertices.

    Args:
        labels: class -> int array of shape (n_vertices,): each vertex's label in that class
            (already restricted to the subject's vertices, lh then rh).
        names: class -> {label: ROI name}; label 0 means "outside every ROI" and is skipped.
        where: class -> file description for error messages.

    A label present on a vertex but missing from its class's table is an error. A name
    that occurs in two classes is qualified as ``<class>:<name>`` in both.
    """
    per_class: dict[str, dict[str, np.ndarray]] = {}
    for roi_class, class_labels in labels.items():
        table = names[roi_class]
        unnamed = sorted(set(np.unique(class_labels).tolist()) - set(table) - {0})
        if unnamed:
            raise InvalidInputError(f"{where[roi_class]}: labels {unnamed[:10]} have no name in the class's "
                                    f"label table (known labels: {sorted(table)})")
        per_class[roi_class] = {name: class_labels == label for label, name in sorted(table.items()) if label != 0}
    counts: dict[str, int] = {}
    for masks in per_class.values():
        for name in masks:
            counts[name] = counts.get(name, 0) + 1
    rois: dict[str, np.ndarray] = {}
    for roi_class, masks in per_class.items():
        for name, mask in masks.items():
            rois[name if counts[name] == 1 else f"{roi_class}:{name}"] = mask
    classes = {roi_class: labels[roi_class] != 0 for roi_class in labels}
    return rois, classes


def select_vertices(mask: Sequence[str] | None, rois: dict[str, np.ndarray], classes: dict[str, np.ndarray],
                    n_vertices: int) -> np.ndarray:
    """Bool array of shape (n_vertices,): the vertices to keep.

    Args:
        mask: ``None`` keeps every vertex; otherwise ROI class names (``"prf-visualrois"``)
            and/or ROI names (``"FFA-1"``), and the union of their vertices is kept.
    """
    if mask is None:
        return np.ones(n_vertices, dtype=bool)
    if isinstance(mask, str):
        mask = (mask,)
    keep = np.zeros(n_vertices, dtype=bool)
    for item in mask:
        if item in classes:
            keep |= classes[item]
        elif item in rois:
            keep |= rois[item]
        else:
            raise InvalidInputError(f"mask entry {item!r} is neither an ROI class nor an ROI of this subject; "
                                    f"classes: {sorted(classes)}; ROIs: {sorted(rois)}")
    if not keep.any():
        raise InvalidInputError(f"mask {list(mask)} selects no vertex of this subject")
    return keep


def describe_mask(mask: Sequence[str] | str | None, *, default: str) -> str:
    """The mask as recorded in ``Subject.source``: the names joined by commas, or ``default`` for None."""
    if mask is None:
        return default
    return mask if isinstance(mask, str) else ",".join(mask)


def parse_color_table(text: str, *, path: str) -> dict[int, str]:
    """Label -> name from a FreeSurfer-style colour table (``<label> <name> [r g b a]`` per line)."""
    table: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if len(tokens) < 2 or not tokens[0].lstrip("-").isdigit():
            raise InvalidInputError(f"colour table {path} line {number} is {line!r}; expected '<label> <name> ...'")
        table[int(tokens[0])] = tokens[1]
    return table
