"""Running ``bddn`` commands in tests: stage one with a tiny random ViT, stage two on a fake store and subject."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import cli, runroot
from pipeline.commands import fit as fit_command

#: The stage-one test model (timm's tiny ViT, random weights).
FEATURES_MODEL = "timm:test_vit"
#: Flags that make a FactorTopy fit take about a second.
FAST_FIT = ["--epochs", "1", "--batch-size", "16", "--warm-start", "none", "--no-progress"]


def stage_one_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser with just the stage-one sub-commands, so a test depends on no other command."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("pipeline.commands.demo_images", "pipeline.commands.features"))


def run_features(run_root: Path, *extra: str) -> int:
    """``bddn features`` with the test model, 4 images per chunk; returns the exit status."""
    return cli.main(["--run-root", str(run_root), "features", "--model", FEATURES_MODEL, "--random-init",
                     "--no-progress", "--chunk-images", "4", *extra])


def fake_fit_root(root: Path, monkeypatch: pytest.MonkeyPatch, make_store, make_subject) -> tuple[object, list]:
    """A run root with a random store of model ``fake`` and a 5-vertex subject that every subject key loads;
    returns the subject and the list of (data, key, root, options) each load was called with."""
    store = make_store(runroot.feature_store_path(root, "demo", "fake"))
    subject, _ = make_subject(store, n_vertices=5)
    calls = []

    def fake_load_subject(data, subject_key, *, root, **kwargs):
        calls.append((data, subject_key, root, kwargs))
        return subject

    monkeypatch.setattr(fit_command, "load_subject", fake_load_subject)
    return subject, calls


def run_fit(run_root: Path, *extra: str) -> int:
    """A fast ``bddn fit`` of subject 1 on model ``fake``; returns the exit status."""
    return cli.main(["--run-root", str(run_root), "fit", "--model", "fake", "--subject", "1", *FAST_FIT, *extra])
