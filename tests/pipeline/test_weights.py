"""The packaged mobilenet_v2 ImageNet weights land where torchvision's loader finds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.errors import WeightsUnavailableError
from pipeline import weights


def test_install_copies_hash_checked_file_once(tmp_path: Path) -> None:
    target = weights.install_mobilenet_v2_weights(tmp_path / "checkpoints")
    assert target.name == weights.MOBILENET_V2_FILE
    assert target.stat().st_size == weights.packaged_mobilenet_v2().stat().st_size
    mtime = target.stat().st_mtime_ns
    assert weights.install_mobilenet_v2_weights(tmp_path / "checkpoints").stat().st_mtime_ns == mtime


def test_corrupt_package_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "weights" / weights.MOBILENET_V2_FILE
    fake.parent.mkdir()
    fake.write_bytes(b"not the weights")
    monkeypatch.setattr(weights, "packaged_mobilenet_v2", lambda: fake)
    with pytest.raises(WeightsUnavailableError, match="does not match"):
        weights.install_mobilenet_v2_weights(tmp_path / "checkpoints")
