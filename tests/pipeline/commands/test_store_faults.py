"""A damaged feature store is never trusted: missing, altered or truncated chunks are found and extracted again,
and a reader that meets one stops with one line naming the store, array and chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cache.errors import DamagedStoreError
from cache.folder import chunk_file
from cache.integrity import damaged_chunks
from cache.store import FeatureStore
from pipeline import cli, runroot
from cli_runs import FEATURES_MODEL, run_features, stage_one_only


@pytest.fixture(autouse=True)
def only_stage_one_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    stage_one_only(monkeypatch)


@pytest.fixture()
def finished(tmp_path: Path) -> tuple[Path, FeatureStore, np.ndarray]:
    """A finished 8-image store (2 chunks) and every image's first-layer local features."""
    assert cli.main(["--run-root", str(tmp_path), "demo-images", "--count", "8", "--size", "40"]) == 0
    assert run_features(tmp_path) == 0
    store = FeatureStore.open(runroot.feature_store_path(tmp_path, "demo", FEATURES_MODEL))
    return tmp_path, store, store.read(store.image_ids.tolist()).local[0]


def _chunk_file(store: FeatureStore, chunk: int) -> Path:
    return chunk_file(store.path, next(iter(store.feature_arrays().values())), chunk)


def _all_local(store_path: Path) -> np.ndarray:
    store = FeatureStore.open(store_path)
    return store.read(store.image_ids.tolist()).local[0]


def test_a_deleted_chunk_file_is_found_and_extracted_again(finished, capsys):
    run_root, store, before = finished
    _chunk_file(store, 1).unlink()
    assert list(damaged_chunks(store)) == [1]
    capsys.readouterr()
    assert run_features(run_root) == 0
    err = capsys.readouterr().err
    assert "1 damaged chunk(s)" in err and "is missing" in err and "up to date" not in err
    np.testing.assert_array_equal(_all_local(store.path), before)       # same seed: the same features
    assert damaged_chunks(FeatureStore.open(store.path), full=True) == {}


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_an_altered_or_truncated_chunk_stops_a_reader_in_one_line_and_verify_repairs_it(finished, capsys, damage):
    run_root, store, before = finished
    path = _chunk_file(store, 0)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2:len(data) // 2 + 16] = bytes(b ^ 0xFF for b in data[len(data) // 2:len(data) // 2 + 16])
    else:
        data = data[:len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedStoreError) as caught:
        FeatureStore.open(store.path).read(store.image_ids.tolist())
    message = str(caught.value)
    assert "\n" not in message and str(store.path) in message and "chunk 0" in message and "--verify" in message
    assert list(damaged_chunks(FeatureStore.open(store.path), full=True)) == [0]
    # a truncated file is caught by the default check (its size was recorded); altered bytes need --verify
    assert list(damaged_chunks(FeatureStore.open(store.path))) == ([0] if damage == "truncate" else [])
    capsys.readouterr()
    assert run_features(run_root, *(() if damage == "truncate" else ("--verify",))) == 0
    assert "1 damaged chunk(s)" in capsys.readouterr().err
    np.testing.assert_array_equal(_all_local(store.path), before)


def test_an_intact_store_is_up_to_date_after_either_check(finished, capsys):
    run_root, _, _ = finished
    capsys.readouterr()
    assert run_features(run_root) == 0
    err = capsys.readouterr().err
    assert "up to date" in err and "every chunk file present" in err
    assert run_features(run_root, "--verify") == 0
    assert "every chunk decoded and finite" in capsys.readouterr().err


def test_a_full_disk_during_extraction_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    """ENOSPC on the second chunk: one line naming the problem, the first chunk kept, a rerun finishes the rest."""
    import errno

    assert cli.main(["--run-root", str(tmp_path), "demo-images", "--count", "8", "--size", "40"]) == 0
    real = FeatureStore.write_chunk

    def full_after_first(self, chunk, **kwargs):
        if chunk == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "local_layer_00_g8"))
        return real(self, chunk, **kwargs)

    monkeypatch.setattr(FeatureStore, "write_chunk", full_after_first)
    capsys.readouterr()
    assert run_features(tmp_path) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no space left on the device while writing" in message and "GB free there" in message
    store = FeatureStore.open(runroot.feature_store_path(tmp_path, "demo", FEATURES_MODEL))
    assert store.pending_chunks() == [1]
    monkeypatch.setattr(FeatureStore, "write_chunk", real)
    assert run_features(tmp_path) == 0 and FeatureStore.open(store.path).is_complete()


def test_an_image_whose_content_changed_is_extracted_again(finished, capsys):
    """Same file name, new pixels: the store notices by content, re-extracts that image's chunk, and the new
    features are those of the new pixels (the other chunk is untouched)."""
    from PIL import Image

    run_root, store, before = finished
    image = run_root / "imagesets" / "demo" / "demo-00005.png"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(image)
    capsys.readouterr()
    assert run_features(run_root) == 0
    err = capsys.readouterr().err
    assert "1 image(s) changed" in err and "demo-00005.png" in err and "up to date" not in err
    after = _all_local(store.path)
    np.testing.assert_array_equal(after[:4], before[:4])
    assert not np.array_equal(after[5], before[5])
    assert run_features(run_root) == 0
    assert "up to date" in capsys.readouterr().err
