"""The run root comes from the flag, then the environment, then ./runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.runroot import feature_store_path, fit_dir, resolve_run_root, safe_name


def test_flag_beats_environment_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BDDN_RUN_ROOT", str(tmp_path / "env"))
    assert resolve_run_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_run_root() == tmp_path / "env"
    monkeypatch.delenv("BDDN_RUN_ROOT")
    monkeypatch.chdir(tmp_path)
    assert resolve_run_root() == tmp_path / "runs"


def test_layout_uses_safe_single_components(tmp_path: Path) -> None:
    assert safe_name("timm:vit_small/x") == "timm-vit_small-x"
    assert feature_store_path(tmp_path, "demo", "hf:org/model") == tmp_path / "features" / "demo" / "hf-org-model.zarr"
    assert fit_dir(tmp_path, "clip", "subj01") == tmp_path / "fits" / "clip" / "subj01"
    assert fit_dir(tmp_path, "clip", "subj01", "ridge") == tmp_path / "fits" / "clip" / "subj01-ridge"
