"""Fit several subjects at once: shared bottlenecks and selectors, one read-out per subject.

The paper's "subject average" map: one FactorTopy model whose layer, space and scale
selectors (MLPs of the fsaverage sphere position) and per-layer bottlenecks are shared
by every subject, while each subject keeps its own per-vertex read-out ``(W, bias)``.
Training is :func:`~stages.fit.train.train_factortopy`: each step fits one subject's
batch, subjects taking turns in a seeded order in proportion to their training images;
the validation R^2 averaged over subjects drives early stopping; the warm start fits the
shared selectors to every subject's ridge scores at once.

The result is one :class:`~stages.fit.result.FitResult` per subject, with the same
per-vertex table as a single-subject fit. Its method is ``"factortopy-joint"`` and its
provenance records the joint fit (``provenance["joint"]``: the subject list and this
subject's place in it); its weights are the shared parts plus its own read-out, named as
in a single-subject model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cache.errors import InvalidInputError
from cache.store import FeatureStore
from stages.fit.config import FitConfig
from stages.fit.outputs import TrainedFit
from stages.fit.train import train_factortopy
from stages.mesh import FSAVERAGE7_VERTICES
from stages.subject import Subject

#: Method label of every subject's result of a joint fit.
JOINT_METHOD = "factortopy-joint"


def fit_factortopy_multi(stores: FeatureStore | Sequence[FeatureStore], subjects: Sequence[Subject],
                         cfg: FitConfig, *, checkpoint_dir: Path | None, progress: bool = True,
                         neighbours: Sequence[np.ndarray | None] | None = None) -> list[TrainedFit]:
    """Fit FactorTopy to two or more subjects jointly.

    Args:
        stores: one feature store holding every subject's images, or one store per subject
            (features of the same model and layers).
        subjects: the subjects, with distinct names; their sphere coordinates must share
            one space (fsaverage), since the selectors are functions of it.
        cfg: training settings (see :class:`~stages.fit.config.FitConfig`).
        checkpoint_dir: folder for per-epoch checkpoints of the joint model; an existing
            compatible checkpoint (same subjects, splits, layers and config) is resumed.
            ``None`` = no checkpoints.
        progress: show a progress bar.
        neighbours: per subject, int64 array of shape (n_edges, 2) of neighbouring vertex
            pairs for ``cfg.smoothness_weight``, or None.

    Returns:
        one fit per subject, in the order given.

    Raises:
        InvalidInputError: fewer than two subjects, repeated names, not one store per subject, or
            subjects placing one fsaverage vertex at different sphere positions.
        StoreMismatchError: stores of different models or layers (and every single-subject check).
        IncompleteStoreError: a subject's images are missing from its store.
    """
    subjects = list(subjects)
    if len(subjects) < 2:
        raise InvalidInputError(f"a joint fit needs at least two subjects, got {len(subjects)}; fit a single "
                                "subject with fit_factortopy (`bddn fit --subject N`)")
    names = [subject.name for subject in subjects]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInputError(f"subjects {repeated} are given more than once; a joint fit takes each subject once")
    check_shared_positions(subjects)
    stores = [stores] * len(subjects) if isinstance(stores, FeatureStore) else list(stores)
    if len(stores) != len(subjects):
        raise InvalidInputError(f"{len(stores)} feature stores for {len(subjects)} subjects; pass one store for all "
                                "or one per subject")
    trained = train_factortopy(stores, subjects, cfg, checkpoint_dir=checkpoint_dir, progress=progress,
                               neighbours=neighbours)
    return [joint_result(trained.result(index), names, index) for index in range(len(subjects))]


def joint_result(result: TrainedFit, names: Sequence[str], index: int) -> TrainedFit:
    """``result`` labelled as subject ``index`` of a joint fit of ``names``."""
    provenance = {**result.provenance, "joint": {"subjects": list(names), "subject_index": index,
                                                 "shared": ["bottlenecks", "selectors"]}}
    return dataclasses.replace(result, method=JOINT_METHOD, provenance=provenance)


def check_shared_positions(subjects: Sequence[Subject], *, tolerance: float = 1e-3) -> None:
    """Refuse subjects whose sphere coordinates disagree at a vertex they share.

    The shared selectors are functions of position, so one fsaverage vertex must have one
    position in every subject. Each subject's own right-hemisphere shift depends on its vertex
    set; ``pipeline.surfaces.shared_sphere_coordinates`` gives the subjects one shift.
    """
    keys = np.concatenate([s.concatenated_index for s in subjects])
    coords = np.concatenate([np.asarray(s.sphere_coords, np.float64) for s in subjects])
    owner = np.repeat(np.arange(len(subjects)), [s.n_vertices for s in subjects])
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    gaps = np.abs(coords - coords[first[inverse]]).max(axis=1)
    worst = int(gaps.argmax())
    if gaps[worst] > tolerance:
        key = int(keys[worst])
        raise InvalidInputError(
            f"{subjects[owner[worst]].name}: fsaverage vertex {key % FSAVERAGE7_VERTICES} "
            f"({'rh' if key >= FSAVERAGE7_VERTICES else 'lh'}) sits {gaps[worst]:.3g} away from where "
            f"{subjects[owner[first[inverse[worst]]]].name} puts it; give the subjects one hemisphere offset "
            "(pipeline.surfaces.shared_sphere_coordinates) before a joint fit")
