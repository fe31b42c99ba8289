"""The in-silico tests' world: a run root with a training store, a store of new images and synthetic subjects.

A smooth random store of model ``fake`` (200 images), synthetic subjects planted on it, and a store of 40 new
images from the same feature distribution that no fit sees (``tests/pipeline/test_predict*.py``).
"""

from __future__ import annotations

from pathlib import Path

from builders import SYNTHETIC_FEATURES, image_folder, random_store
from pipeline import runroot
from pipeline.subjects.algonauts import read_algonauts
from pipeline.synthetic.config import SyntheticConfig
from pipeline.synthetic.generate import synthesize_subject
from stages.subject import Subject

SYNTH = SyntheticConfig(vertices_per_hemisphere=60, noise_ceiling=0.8, batch_size=64)


def build_world(root: Path, *, subjects: tuple[int, ...] = (1,)) -> dict:
    """{"root", "store", "novel", "subjects": [Subject, ...], "subject": the first}: the stores and subjects."""
    store = random_store(runroot.feature_store_path(root, "demo", "fake"), n_images=200, **SYNTHETIC_FEATURES)
    novel = random_store(runroot.feature_store_path(root, "novel", "fake"), n_images=40, seed=7, **SYNTHETIC_FEATURES)
    files = image_folder(root / "imagesets" / "demo", store.image_ids.tolist())
    found: list[Subject] = []
    for number in subjects:
        synthesize_subject(store, files, runroot.synthetic_root(root), number, cfg=SYNTH, seed=0, model="fake")
        found.append(read_algonauts(runroot.synthetic_root(root), number, reader="synthetic"))
    return {"root": root, "store": store, "novel": novel, "subjects": found, "subject": found[0]}
