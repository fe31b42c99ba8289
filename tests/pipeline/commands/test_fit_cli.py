"""``bddn fit``: flags, presets and the reference preset reach the fit; outputs land where the run root says."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace

import pytest

from pipeline import cli, runroot
from pipeline.commands import fit as fit_command
from pipeline.report.inputs import discover_inputs
from cache.errors import ConfigError
from pipeline.config import build_config
from stages.fit.config import REFERENCE_PRESET, FitConfig
from stages.fit.ridge import RidgeConfig
from stages.fit.result import FIT_JSON, VERTEX_TABLE, FitResult
from stages.fit.weights_file import WEIGHTS_FILE
from cli_runs import FAST_FIT, fake_fit_root

FAST = FAST_FIT


@pytest.fixture()
def run_root(tmp_path, monkeypatch, make_store, make_subject):
    root = tmp_path / "runs"
    _, calls = fake_fit_root(root, monkeypatch, make_store, make_subject)
    return root, calls


def _fit_json(run_root, method="factortopy"):
    run_root = run_root[0] if isinstance(run_root, tuple) else run_root
    return json.loads((runroot.fit_dir(run_root, "fake", "subj01", method) / FIT_JSON).read_text())


def test_fit_writes_a_complete_folder(run_root, capsys):
    status = cli.main(["--run-root", str(run_root[0]), "fit", "--model", "fake", "--subject", "1", *FAST])
    assert status == 0, capsys.readouterr().err
    folder = runroot.fit_dir(run_root[0], "fake", "subj01")
    assert {FIT_JSON, VERTEX_TABLE, WEIGHTS_FILE, "metrics.jsonl"} <= {p.name for p in folder.iterdir()}
    assert not (folder / fit_command.CHECKPOINT_FOLDER).exists()
    record = _fit_json(run_root)
    assert record["config"]["epochs"] == 1 and record["config"]["batch_size"] == 16
    assert record["config"]["selector_lr"] == FitConfig().selector_lr
    data, key, root, kwargs = run_root[1][0]
    assert (data, key, root) == ("synthetic", 1, run_root[0].resolve())
    out = capsys.readouterr().out
    assert "subj01" in out
    # what it chose for the features and why, and each phase's cost, said and recorded
    assert re.search(r"training features (resident|streamed)[^\n]*\(auto:", out)
    assert "phases read_subject" in out and "warm_start" in out
    assert {"read_subject", "warm_start", "train", "predict"} <= set(record["metrics"]["phases"])


def test_reference_preset_then_flags(run_root):
    assert cli.main(["--run-root", str(run_root[0]), "fit", "--model", "fake", "--reference", "--epochs", "1",
                     "--batch-size", "16", "--no-progress"]) == 0
    config = _fit_json(run_root)["config"]
    reference = build_config(FitConfig, REFERENCE_PRESET)
    assert config["selector_lr"] is None and config["warm_start"] == "none"
    assert config["prior_fade_steps"] == reference.prior_fade_steps and config["prior_fade_epochs"] is None
    assert config["epochs"] == 1 and config["batch_size"] == 16


def test_toml_preset_and_nested_model(run_root, tmp_path):
    preset = tmp_path / "preset.toml"
    preset.write_text('[fit]\npatience = 2\nlr = 0.002\n[fit.model]\nbottleneck = 16\n')
    assert cli.main(["--run-root", str(run_root[0]), "fit", "--model", "fake", "--config", str(preset),
                     "--scale-mode", "pyramid", *FAST]) == 0
    config = _fit_json(run_root)["config"]
    assert config["patience"] == 2 and config["lr"] == 0.002
    assert config["model"]["bottleneck"] == 16 and config["model"]["scale_mode"] == "pyramid"


def test_bad_preset_key_is_one_line_error(run_root, tmp_path, capsys):
    preset = tmp_path / "preset.toml"
    preset.write_text('[fit]\nlearning_rate = 0.1\n')
    assert cli.main(["--run-root", str(run_root[0]), "fit", "--model", "fake", "--config", str(preset), *FAST]) == 2
    assert "unknown key 'learning_rate'" in capsys.readouterr().err


def test_missing_store_names_the_fix(run_root, capsys):
    assert cli.main(["--run-root", str(run_root[0]), "fit", "--model", "other", *FAST]) == 2
    err = capsys.readouterr().err
    assert "bddn features --model other" in err


def test_non_synthetic_data_needs_root(run_root, capsys):
    assert cli.main(["--run-root", str(run_root[0]), "fit", "--model", "fake", "--data", "algonauts", *FAST]) == 2
    assert "--root" in capsys.readouterr().err


def _resolved(*argv: str):
    parser = argparse.ArgumentParser()
    fit_command.add_arguments(parser)
    return fit_command.resolve_config(parser.parse_args(argv))


def test_config_is_resolved_once_at_the_door(tmp_path):
    """Defaults, the reference table, a TOML table and the flags given merge into one frozen config."""
    preset = tmp_path / "preset.toml"
    preset.write_text('[fit]\nepochs = 3\nselector_lr = 0.004\n[fit.model]\nbottleneck = 16\n'
                      '[ridge]\nalphas = [1.0, 10.0]\n')
    cfg = _resolved("--reference", "--config", str(preset), "--epochs", "5", "--scale-mode", "pyramid",
                    "--device", "cpu", "--precision", "off")
    assert isinstance(cfg, FitConfig)
    assert (cfg.epochs, cfg.selector_lr, cfg.batch_size, cfg.device, cfg.precision) == (5, 0.004, 8, "cpu", "fp32")
    assert (cfg.model.bottleneck, cfg.model.scale_mode, cfg.model.hidden) == (16, "pyramid", 128)
    assert _resolved().selector_lr == FitConfig().selector_lr  # flags not given leave the defaults alone
    ridge = _resolved("--method", "banded-ridge", "--config", str(preset), "--device", "cpu", "--layers", "b,a",
                      "--seed", "3", "--epochs", "2")
    assert ridge == RidgeConfig(method="banded-ridge", alphas=(1.0, 10.0), device="cpu", layers=("b", "a"), seed=3)


def test_reference_is_refused_for_ridge():
    with pytest.raises(ConfigError, match="--reference"):
        _resolved("--method", "ridge", "--reference")


def test_reference_preset_constants():
    """Every reference constant of method.md."""
    cfg = build_config(FitConfig, REFERENCE_PRESET)
    assert (cfg.grid, cfg.model.bottleneck, cfg.model.n_frequencies * 6, cfg.model.scale_mode) == (8, 128, 192, "mix")
    assert (cfg.loss_beta, cfg.prior_weight, cfg.prior_fade_steps, cfg.prior_fade_epochs) == (0.1, 0.1, 2000, None)
    assert (cfg.lr, cfg.selector_lr, cfg.weight_decay, cfg.batch_size, cfg.clip_grad_norm) == (1e-3, None, 0.01, 8, 0.5)
    assert cfg.warm_start == "none" and cfg.smoothness_weight == 0 and cfg.precision == "fp16"
    assert not cfg.normalise_layers
    assert cfg.fade_steps(1125) == 2000


@pytest.fixture()
def joint_root(tmp_path, monkeypatch, make_store, make_subject):
    root = tmp_path / "runs"
    store = make_store(runroot.feature_store_path(root, "demo", "fake"))
    subjects = {key: replace(make_subject(store, n_vertices=4 + key, seed=key)[0], name=f"subj{key:02d}")
                for key in (1, 2)}
    monkeypatch.setattr(fit_command, "load_subject", lambda data, key, **kwargs: subjects[key])
    return root


def test_subjects_fit_jointly_into_one_folder_each(joint_root, capsys):
    status = cli.main(["--run-root", str(joint_root), "fit", "--model", "fake", "--subjects", "1", "2", *FAST])
    assert status == 0, capsys.readouterr().err
    group = runroot.joint_fit_dir(joint_root, "fake", ["subj01", "subj02"])
    assert group == joint_root / "fits" / "fake" / "subj01+subj02"
    assert sorted(p.name for p in group.iterdir()) == ["subj01", "subj02"]  # the checkpoint is gone
    for number, name in ((1, "subj01"), (2, "subj02")):
        fit = FitResult.load(group / name)
        assert fit.method == "factortopy-joint" and fit.n_vertices == 4 + number
        assert fit.provenance["joint"]["subjects"] == ["subj01", "subj02"]
        assert fit.config["epochs"] == 1
    out = capsys.readouterr().out
    assert "subj01+subj02/subj01" in out and "subj01+subj02/subj02" in out
    inputs = discover_inputs(joint_root)
    assert [item.slug for item in inputs] == ["fake/subj01+subj02/subj01-factortopy-joint",
                                              "fake/subj01+subj02/subj02-factortopy-joint"]


def test_subjects_bad_requests_are_one_line_errors(joint_root, capsys):
    assert cli.main(["--run-root", str(joint_root), "fit", "--model", "fake", "--subjects", "1", *FAST]) == 2
    assert "two or more subjects" in capsys.readouterr().err
    assert cli.main(["--run-root", str(joint_root), "fit", "--model", "fake", "--subjects", "1", "2",
                     "--method", "ridge", *FAST]) == 2
    assert "--subject" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--run-root", str(joint_root), "fit", "--subject", "1", "--subjects", "1", "2", *FAST])
    assert "not allowed with argument" in capsys.readouterr().err
