"""bddn predict on image files and pixels: new images are extracted with the fit's own recipe (a tiny random ViT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import image_folder, planted_subject
from cache.store import FeatureStore
from pipeline import cli, runroot
from pipeline.api import load_fit, open_store
from pipeline.insilico import FEATURE_KEYS
from stages.fit.config import FitConfig
from stages.fit.train import fit_factortopy
from cli_runs import FEATURES_MODEL, run_features


@pytest.fixture(scope="module")
def vit_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run root, fit folder): a 6-vertex subject fitted for one epoch on 20 images' features of the tiny ViT."""
    base = tmp_path_factory.mktemp("vit-fit")
    root = base / "runs"
    folder = base / "seen"
    image_folder(folder, [f"demo-{i:05d}" for i in range(20)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BDDN_RUN_ROOT", str(root))
        assert run_features(root, "--images", str(folder)) == 0
    store = FeatureStore.open(runroot.feature_store_path(root, "seen", FEATURES_MODEL))
    subject, _ = planted_subject(store, n_val=4, n_test=4)
    result = fit_factortopy(store, subject, FitConfig(epochs=1, batch_size=4, warm_start="none", device="cpu"),
                            checkpoint_dir=None, progress=False)
    return root, result.save(runroot.fit_dir(root, FEATURES_MODEL, subject.name))


def test_files_and_pixels_take_the_fits_store_path_and_give_one_answer(vit_fit: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    root, fit_folder = vit_fit
    pixels = np.random.default_rng(3).integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    new = tmp_path / "new"
    new.mkdir()
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(new / f"photo{index}.png")
    assert cli.main(["--run-root", str(root), "predict", "--fit", str(fit_folder), "--images", str(new),
                     "--no-progress"]) == 0
    written = open_store(runroot.predictions_path(root, fit_folder, "new"))
    fit = load_fit(fit_folder)
    from_pixels = fit.predict([Image.fromarray(image) for image in pixels])
    assert written.shape == (3, 6) and np.allclose(written.values, from_pixels.values, atol=1e-6)
    assert sorted(written.image_id.values.tolist()) == sorted(from_pixels.image_id.values.tolist())
    extracted = FeatureStore.open(runroot.feature_store_path(root, "new", FEATURES_MODEL))
    for key in FEATURE_KEYS:   # the same compared provenance as the fit's own store
        assert extracted.provenance[key] == fit.store_provenance[key], key
    assert fit.predict(new).values.tolist() == written.values.tolist()   # a second call reuses the store
