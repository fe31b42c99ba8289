"""Image folders with entries that are not readable images: said, never skipped in silence."""

from __future__ import annotations

import logging
import os

import pytest
from PIL import Image

from cache.errors import InvalidInputError
from pipeline.imagesets.folder import list_image_files, stable_image_id


def test_links_and_folders_named_like_images_are_listed_in_a_warning(tmp_path, caplog):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    (tmp_path / "x.png").mkdir()
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    os.symlink(tmp_path / "loop.png", tmp_path / "loop.png")
    with caplog.at_level(logging.WARNING):
        files = list_image_files(tmp_path)
    assert [path.name for path in files] == ["a.png"]
    message = caplog.text
    assert "skipped 3 entries" in message and "dangling.png" in message and "loop.png" in message and "x.png" in message


def test_an_unreadable_image_with_a_content_id_is_one_line(tmp_path, monkeypatch):
    """An image whose id is its content hash but whose bytes cannot be read (permissions; simulated, as the
    tests may run as root): one line naming the file, not a PermissionError traceback."""
    from pipeline.imagesets import folder as folder_module

    path = tmp_path / "cat.png"
    Image.new("RGB", (32, 32)).save(path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(folder_module, "hash_file", refuse)
    with pytest.raises(InvalidInputError) as caught:
        stable_image_id(path)
    message = str(caught.value)
    assert message.startswith(f"image {path} cannot be read (Permission denied)") and "\n" not in message
