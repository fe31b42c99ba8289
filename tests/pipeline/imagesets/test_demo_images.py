"""The demo image set: seeded, deterministic, distinct, idempotent, readable by the image-folder reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cache.errors import InvalidInputError
from pipeline import cli, runroot
from pipeline.imagesets.demo import MANIFEST_NAME, SOURCES, write_demo_images
from pipeline.imagesets.folder import image_source_from_folder


def _pixels(folder: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(folder / name))


def test_same_seed_same_pixels_and_prefix_stability(tmp_path: Path) -> None:
    first = write_demo_images(tmp_path / "a", count=12, seed=3, size=48)
    second = write_demo_images(tmp_path / "b", count=20, seed=3, size=48)
    other = write_demo_images(tmp_path / "c", count=12, seed=4, size=48)
    for name in first.files:
        np.testing.assert_array_equal(_pixels(first.folder, name), _pixels(second.folder, name))
    differing = [not np.array_equal(_pixels(first.folder, n), _pixels(other.folder, n)) for n in first.files]
    assert all(differing)


def test_images_are_distinct_rgb_of_the_requested_size(tmp_path: Path) -> None:
    result = write_demo_images(tmp_path, count=60, seed=0, size=40)
    digests = set()
    for name in result.files:
        image = Image.open(tmp_path / name)
        assert image.mode == "RGB" and image.size == (40, 40)
        digests.add(hashlib.sha256(image.tobytes()).hexdigest())
    assert len(digests) == 60
    assert result.files[0] == "demo-00000.png" and result.files[-1] == "demo-00059.png"


def test_manifest_records_sources_crops_and_transforms(tmp_path: Path) -> None:
    write_demo_images(tmp_path, count=30, seed=1, size=40)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["seed"] == 1 and manifest["count"] == 30 and manifest["size"] == 40
    assert set(manifest["sources"]) == set(SOURCES)
    assert len({record["source"] for record in manifest["images"]}) > 5
    for index, record in enumerate(manifest["images"]):
        assert record["file"] == f"demo-{index:05d}.png" and record["image_id"] == f"demo-{index:05d}"
        height, width = manifest["sources"][record["source"]][:2]
        left, top, right, bottom = record["crop_box"]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert min(right - left, bottom - top) >= 0.2 * min(height, width)
        assert {"flip_horizontal", "brightness", "contrast", "saturation", "hue_shift", "grey"} <= set(record)
        assert record["sha256"] == hashlib.sha256((tmp_path / record["file"]).read_bytes()).hexdigest()


def test_rerun_is_a_no_op_and_damage_is_repaired(tmp_path: Path) -> None:
    write_demo_images(tmp_path, count=8, seed=0, size=40)
    stamp = (tmp_path / "demo-00003.png").stat().st_mtime_ns
    assert write_demo_images(tmp_path, count=8, seed=0, size=40).generated is False
    assert (tmp_path / "demo-00003.png").stat().st_mtime_ns == stamp
    reference = _pixels(tmp_path, "demo-00003.png")
    (tmp_path / "demo-00003.png").write_bytes(b"broken")
    assert write_demo_images(tmp_path, count=8, seed=0, size=40).generated is True
    np.testing.assert_array_equal(_pixels(tmp_path, "demo-00003.png"), reference)
    assert write_demo_images(tmp_path, count=5, seed=0, size=40).generated is True
    assert sorted(p.name for p in tmp_path.glob("demo-*.png")) == [f"demo-{i:05d}.png" for i in range(5)]


def test_folder_reader_takes_the_set_with_demo_ids(tmp_path: Path) -> None:
    write_demo_images(tmp_path, count=6, seed=0, size=40)
    source = image_source_from_folder(tmp_path)
    assert source.image_ids == tuple(f"demo-{i:05d}" for i in range(6))


def test_bad_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="count"):
        write_demo_images(tmp_path, count=0)


def test_command_writes_under_the_run_root(tmp_path: Path) -> None:
    assert cli.main(["--run-root", str(tmp_path), "demo-images", "--count", "4", "--size", "40"]) == 0
    folder = runroot.imageset_dir(tmp_path, "demo")
    assert sorted(p.name for p in folder.glob("*.png")) == [f"demo-{i:05d}.png" for i in range(4)]


@pytest.mark.slow
def test_default_set_has_over_a_thousand_distinct_images(tmp_path: Path) -> None:
    result = write_demo_images(tmp_path)
    assert len(result.files) >= 1000
    digests = {hashlib.sha256(Image.open(tmp_path / name).tobytes()).hexdigest() for name in result.files}
    assert len(digests) == len(result.files)
