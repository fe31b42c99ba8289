"""Finding what to report: fit folders, planted truths, read-out weights; CLI errors in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from pipeline.cli import main
from pipeline.report.inputs import discover_inputs, load_input, load_report_meshes
from pipeline.synthetic.layout import write_planted_truth
from report_helpers import planted_fit


def test_discovers_fits_and_planted_truths_with_readouts(tmp_path: Path) -> None:
    fit = planted_fit()
    fit.method = "ridge"
    folder = fit.save(tmp_path / "fits" / "toy" / "subj01-ridge")
    readout = np.random.default_rng(0).normal(size=(fit.n_vertices, 8)).astype(np.float32)
    save_file({"selectors.layer.weight": np.zeros((3, 3), np.float32), "readouts.0.weight": readout,
               "readouts.0.bias": np.zeros(fit.n_vertices, np.float32)}, str(folder / "weights.safetensors"))
    (tmp_path / "fits" / "toy" / "unfinished").mkdir()  # no fit.json: not a fit
    truth_folder = tmp_path / "synthetic" / "subj01"
    truth_folder.mkdir(parents=True)
    write_planted_truth(truth_folder, planted_fit(), {"seed": 0})
    inputs = discover_inputs(tmp_path)
    assert [(i.fit.method, i.slug) for i in inputs] == [("ridge", "toy/subj01-ridge"), ("truth", "toy/subj01-truth")]
    np.testing.assert_array_equal(inputs[0].readout, readout)
    assert inputs[1].readout is None
    assert load_input(truth_folder / "planted_truth.parquet").fit.method == "truth"
    flat, inflated = load_report_meshes(inputs)
    assert (flat.mesh, flat.lh.kind, inflated.lh.kind) == ("fsaverage5", "flat", "inflated")


def test_fsaverage7_vertices_fall_back_to_the_bundled_mesh(tmp_path: Path) -> None:
    fit = planted_fit()
    fit.vertices["fsaverage_index"] = fit.vertices["fsaverage_index"] + 50_000
    folder = fit.save(tmp_path / "fit")
    with pytest.warns(UserWarning, match="fsaverage5 subset"):
        flat, _ = load_report_meshes([load_input(folder)])
    assert flat.mesh == "fsaverage5"


def test_commands_report_missing_inputs_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--run-root", str(tmp_path), "figures"]) == 2
    assert "no fits under" in capsys.readouterr().err
    assert main(["--run-root", str(tmp_path), "figures", str(tmp_path / "nothing")]) == 2
    assert "neither a finished fit folder" in capsys.readouterr().err
    assert main(["--run-root", str(tmp_path), "compare", str(tmp_path)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["--run-root", str(tmp_path), "figures", "--formats", "svg"]) == 2
    assert "must start with 'png'" in capsys.readouterr().err
    preset = tmp_path / "bad.toml"
    preset.write_text("[figures]\ncolour = 'red'\n")
    assert main(["--run-root", str(tmp_path), "figures", "--config", str(preset)]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err


def test_top_channel_figures_from_a_saved_factortopy_fit(tmp_path: Path) -> None:
    import torch
    from PIL import Image
    from safetensors.torch import save_file as save_torch

    from pipeline.imagesets.folder import list_image_files
    from pipeline.report.inputs import load_input
    from pipeline.report.topchannels import top_channel_figures
    from stages.fit.factortopy import FactorTopy, FactorTopyConfig
    from stages.fit.result import layer_weight_column
    from stages.models.registry import load_model

    torch.manual_seed(3)
    info = load_model("timm:test_vit", pretrained=False).info
    fit = planted_fit(model="timm:test_vit")
    n_layers = info.n_layers
    weights = np.full((fit.n_vertices, n_layers), 1.0 / n_layers, dtype=np.float32)
    fit.vertices = {k: v for k, v in fit.vertices.items() if not k.startswith("layer_weight_")}
    fit.vertices.update({layer_weight_column(i): weights[:, i] for i in range(n_layers)})
    fit.layer_names = info.layer_names
    fit.method = "factortopy"
    fit.provenance = {"store": {"provenance": {"model": {"weights": "random-init"}, "seed": 3}}}
    model = FactorTopy(n_channels=info.n_channels, grid=8, coords=torch.randn(fit.n_vertices, 3),
                       cfg=FactorTopyConfig(bottleneck=16, hidden=16, n_frequencies=4))
    folder = fit.save(tmp_path / "fit")
    save_torch({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "weights.safetensors"))
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(images / "a.png")
    (images / "notes.txt").write_text("not an image")
    figures = top_channel_figures(load_input(folder), list_image_files(images))
    assert [stem for stem, _ in figures] == ["a"]
    titles = [ax.get_title() for ax in figures[0][1].axes if ax.get_title()]
    assert titles == ["image", "V1", "V2", "V3", "V4", "FFA", "PPA"]


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1"])
@pytest.mark.parametrize("command", ["figures", "compare"])
def test_alpha_outside_zero_one_is_a_one_line_error(tmp_path, capsys, command, value):
    fits = [str(tmp_path / "a"), str(tmp_path / "b")] if command == "compare" else []
    assert main(["--run-root", str(tmp_path), command, *fits, "--alpha", value]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"alpha {float(value)} is outside (0, 1)" in error
