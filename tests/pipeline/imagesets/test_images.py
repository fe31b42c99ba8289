"""Image folders: listing order, stable ids, the decoding policy and the one-message refusal of bad files."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cache.errors import InvalidInputError, MissingInputError
from pipeline.imagesets.folder import (
    DECODING_POLICY, MIN_SIDE, FolderImageLoader, decode_image, image_source_from_folder, list_image_files,
    stable_image_id,
)


def _rgb(seed: int = 0, size: tuple[int, int] = (24, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def _save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


# ------------------------------------------------------------------ stable ids
@pytest.mark.parametrize("name, expected", [
    ("train-0001_nsd-00013.png", "nsd-00013"),
    ("test-0007_nsd-72999.png", "nsd-72999"),
    ("demo-00042.png", "demo-00042"),
    ("nsd-13.jpg", "nsd-00013"),
    ("demo-7.png", "demo-00007"),
])
def test_stable_id_from_name(tmp_path: Path, name: str, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"anything")
    assert stable_image_id(path) == expected


@pytest.mark.parametrize("name", ["cat.png", "mynsd-00013.png", "nsd-00013-crop.png", "demo-00042b.png"])
def test_stable_id_falls_back_to_content_hash(tmp_path: Path, name: str) -> None:
    path = _save(tmp_path / name, Image.fromarray(_rgb()))
    expected = "sha256-" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert stable_image_id(path) == expected
    copy = tmp_path / "other-name.png"
    copy.write_bytes(path.read_bytes())
    assert stable_image_id(copy) == expected


# --------------------------------------------------------------------- listing
def test_listing_is_sorted_skips_hidden_and_subfolders(tmp_path: Path) -> None:
    for name in ["b.png", "a.png", "c.png"]:
        _save(tmp_path / name, Image.fromarray(_rgb()))
    _save(tmp_path / "D.JPG", Image.fromarray(_rgb()))
    (tmp_path / ".hidden.png").write_bytes(b"junk")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "0.png", Image.fromarray(_rgb()))
    assert [p.name for p in list_image_files(tmp_path)] == ["D.JPG", "a.png", "b.png", "c.png"]


def test_missing_and_empty_folders_are_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="does not exist"):
        image_source_from_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(InvalidInputError, match="holds no image files"):
        image_source_from_folder(tmp_path / "empty")


def test_source_ids_follow_sorted_names_and_loader_pickles(tmp_path: Path) -> None:
    arrays = {name: _rgb(i) for i, name in enumerate(["train-0002_nsd-00005.png", "train-0001_nsd-00009.png"])}
    for name, array in arrays.items():
        _save(tmp_path / name, Image.fromarray(array))
    source = image_source_from_folder(tmp_path)
    assert source.image_ids == ("nsd-00009", "nsd-00005")
    assert source.names == ("train-0001_nsd-00009.png", "train-0002_nsd-00005.png")
    assert source.decoding == DECODING_POLICY
    loader = pickle.loads(pickle.dumps(source.load))
    assert isinstance(loader, FolderImageLoader)
    np.testing.assert_array_equal(np.asarray(loader(1)), arrays["train-0002_nsd-00005.png"])


def test_duplicate_ids_keep_the_first_and_warn(tmp_path: Path) -> None:
    image = Image.fromarray(_rgb())
    _save(tmp_path / "a.png", image)
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    with pytest.warns(UserWarning, match="b.png"):
        source = image_source_from_folder(tmp_path)
    assert source.names == ("a.png",)


def test_one_id_for_two_different_images_in_a_folder_is_refused(tmp_path: Path) -> None:
    _save(tmp_path / "train-0001_nsd-00013.png", Image.fromarray(_rgb(1)))
    _save(tmp_path / "train-0002_nsd-00013.png", Image.fromarray(_rgb(2)))
    with pytest.raises(InvalidInputError, match="image id nsd-00013 names two different images, .*train-0001_nsd-00013"
                                                 r"\.png and .*train-0002_nsd-00013\.png; .*rename one"):
        image_source_from_folder(tmp_path)


# -------------------------------------------------------------------- decoding
def test_rgb_is_kept_exactly(tmp_path: Path) -> None:
    array = _rgb()
    out = decode_image(_save(tmp_path / "x.png", Image.fromarray(array)))
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), array)


def test_grey_is_replicated(tmp_path: Path) -> None:
    grey = _rgb()[:, :, 0]
    out = np.asarray(decode_image(_save(tmp_path / "g.png", Image.fromarray(grey, mode="L"))))
    np.testing.assert_array_equal(out, np.stack([grey] * 3, axis=2))


def test_palette_is_expanded(tmp_path: Path) -> None:
    palette_colours = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 128]], dtype=np.uint8)
    indices = np.random.default_rng(1).integers(0, 3, size=(20, 24)).astype(np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette_colours.ravel().tolist())
    out = np.asarray(decode_image(_save(tmp_path / "p.png", image)))
    np.testing.assert_array_equal(out, palette_colours[indices])


def test_palette_transparency_composites_on_white(tmp_path: Path) -> None:
    indices = np.zeros((20, 24), dtype=np.uint8)
    indices[:, 12:] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([50, 60, 70, 200, 100, 0])
    out = np.asarray(decode_image(_save(tmp_path / "pt.png", image, transparency=0)))
    assert (out[:, :12] == 255).all()
    assert (out[:, 12:] == [200, 100, 0]).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composites_on_white(tmp_path: Path, mode: str) -> None:
    rgb = _rgb(3)
    alpha = np.random.default_rng(4).integers(0, 256, size=rgb.shape[:2], dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    colour = rgb if mode == "RGBA" else rgb[:, :, :1]
    image = Image.fromarray(np.concatenate([colour, alpha[:, :, None]], axis=2), mode=mode)
    out = np.asarray(decode_image(_save(tmp_path / "a.png", image))).astype(float)
    a = alpha[:, :, None] / 255.0
    expected = np.broadcast_to(colour, rgb.shape) * a + 255.0 * (1 - a)
    assert np.abs(out - expected).max() <= 1.0
    assert (out[0, 0] == 255).all()
    np.testing.assert_array_equal(out[0, 1], np.broadcast_to(colour, rgb.shape)[0, 1])


def test_cmyk_uses_the_standard_conversion(tmp_path: Path) -> None:
    cmyk = np.random.default_rng(5).integers(0, 256, size=(20, 24, 4), dtype=np.uint8)
    out = np.asarray(decode_image(_save(tmp_path / "c.tif", Image.fromarray(cmyk, mode="CMYK")))).astype(int)
    expected = (255 - cmyk[:, :, :3].astype(float)) * (255 - cmyk[:, :, 3:].astype(float)) / 255
    assert np.abs(out - expected).max() <= 1.0


def test_cmyk_jpeg_decodes(tmp_path: Path) -> None:
    cmyk = np.full((32, 32, 4), 40, dtype=np.uint8)
    out = decode_image(_save(tmp_path / "c.jpg", Image.fromarray(cmyk, mode="CMYK"), quality=95))
    assert out.mode == "RGB" and out.size == (32, 32)


def test_sixteen_bit_grey_scales_to_eight_bits(tmp_path: Path) -> None:
    values = np.random.default_rng(6).integers(0, 65536, size=(20, 24)).astype(np.uint16)
    values[0, :4] = [0, 257, 65535, 128]
    path = _save(tmp_path / "d.png", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(decode_image(path))
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out, np.stack([expected] * 3, axis=2))
    assert out[0, :4, 0].tolist() == [0, 1, 255, 0]


def test_thirty_two_bit_integer_grey_is_clipped(tmp_path: Path) -> None:
    values = np.array([[-5, 70000] + [514] * 22] * 20, dtype=np.int32)
    out = np.asarray(decode_image(_save(tmp_path / "i.tif", Image.fromarray(values, mode="I"))))
    assert out[0, :3, 0].tolist() == [0, 255, 2]


def test_float_images_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "f.tif", Image.fromarray(np.ones((20, 20), dtype=np.float32)))
    with pytest.raises(InvalidInputError, match="mode F"):
        decode_image(path)


# ------------------------------------------------------------------ bad files
def _bad_folder(tmp_path: Path) -> dict[str, str]:
    """One good image plus one file per refused case; returns name -> expected message fragment."""
    _save(tmp_path / "good.png", Image.fromarray(_rgb(size=(40, 40))))
    png = tmp_path / "truncated.png"
    _save(png, Image.fromarray(_rgb(7, size=(64, 64))))
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    jpeg = tmp_path / "truncated.jpg"
    _save(jpeg, Image.fromarray(_rgb(8, size=(64, 64))), quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not listed: not an image suffix")
    (tmp_path / "fake.png").write_text("<html>not a png</html>")
    _save(tmp_path / "tiny.png", Image.fromarray(_rgb(size=(MIN_SIDE - 1, 100))))
    return {"truncated.png": "truncated", "truncated.jpg": "truncated", "empty.png": "zero bytes",
            "fake.png": "not an image", "tiny.png": f"minimum side of {MIN_SIDE} px"}


def test_one_error_lists_every_bad_file(tmp_path: Path) -> None:
    expected = _bad_folder(tmp_path)
    with pytest.raises(InvalidInputError) as caught:
        image_source_from_folder(tmp_path)
    message = str(caught.value)
    assert f"{len(expected)} of {len(expected) + 1} images" in message
    assert "good.png" not in message
    for name, fragment in expected.items():
        part = message.split(f"{name}: ", 1)
        assert len(part) == 2, f"{name} missing from: {message}"
        assert part[1].split(";")[0].find(fragment) >= 0, f"{name}: expected {fragment!r} in {message}"


@pytest.mark.parametrize("case", ["truncated.png", "truncated.jpg", "empty.png", "fake.png", "tiny.png"])
def test_each_bad_file_is_refused_alone(tmp_path: Path, case: str) -> None:
    _bad_folder(tmp_path)
    with pytest.raises(InvalidInputError, match=case.replace(".", r"\.")):
        decode_image(tmp_path / case)


def test_min_side_is_accepted(tmp_path: Path) -> None:
    out = decode_image(_save(tmp_path / "edge.png", Image.fromarray(_rgb(size=(MIN_SIDE, MIN_SIDE)))))
    assert out.size == (MIN_SIDE, MIN_SIDE)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = _rgb(9, size=(40, 20))  # 40 wide, 20 high
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = _save(tmp_path / "r.png", image, exif=exif)
    out = decode_image(path)
    assert out.size == (20, 40)
    np.testing.assert_array_equal(np.asarray(out), np.rot90(array, k=-1))
