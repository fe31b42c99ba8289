"""The generic reader: images folder + responses (.npy / Parquet) + vertex list (+ ROIs, noise ceiling)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cache.errors import InvalidInputError, MissingInputError
from pipeline.subjects import load_subject, read_generic
from subject_folders import GENERIC_VERTICES as VERTICES, N_FS, write_generic


@pytest.mark.parametrize("fmt, vertex_fmt", [("npy", "npy"), ("parquet", "txt")])
def test_generic_folder_round_trip(tmp_path: Path, fmt: str, vertex_fmt: str) -> None:
    responses = write_generic(tmp_path / "mydata", fmt=fmt, vertex_fmt=vertex_fmt)
    subject = load_subject("generic", "mydata", root=tmp_path, split_seed=4)
    np.testing.assert_array_equal(subject.responses, responses)
    digests = [hashlib.sha256((tmp_path / "mydata/images" / f"img{i:02d}.png").read_bytes()).hexdigest()[:16]
               for i in range(10)]
    assert subject.stimulus_ids.tolist() == [f"sha256-{d}" for d in digests]
    assert subject.hemisphere.tolist() == ["lh", "lh", "lh", "rh", "rh"]
    assert subject.fsaverage_index.tolist() == [12, 3, 400, 7, 9000]
    np.testing.assert_array_equal(subject.concatenated_index, VERTICES)
    assert subject.rois["V1"].tolist() == [True, True, False, True, False]
    assert subject.rois["FFA"].tolist() == [False, False, True, False, False]
    np.testing.assert_allclose(subject.noise_ceiling, np.linspace(0.1, 0.5, 5), rtol=1e-6)
    assert sum(rows.size for rows in subject.splits.values()) == 10 and subject.splits["test"].size == 1


def test_generic_nan_vertex_dropped_and_mask(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "subj03"
    responses = write_generic(folder)
    responses[4, 2] = np.nan
    np.save(folder / "responses.npy", responses)
    with caplog.at_level(logging.WARNING):
        subject = load_subject("generic", 3, root=tmp_path, mask=("V1",))
    assert "dropped 1 of 5 vertices" in caplog.text
    assert subject.name == "subj03"
    np.testing.assert_array_equal(subject.concatenated_index, VERTICES[[0, 1, 3]])
    np.testing.assert_array_equal(subject.responses, responses[:, [0, 1, 3]])
    assert "FFA" in subject.rois and not subject.rois["FFA"].any()


def test_read_generic_with_explicit_paths(tmp_path: Path) -> None:
    write_generic(tmp_path)
    subject = read_generic(tmp_path / "images", tmp_path / "responses.npy", tmp_path / "vertices.npy", name="x",
                           test_fraction=0.3)
    assert subject.rois == {} and subject.noise_ceiling is None and subject.splits["test"].size == 3


def _break(case: str, folder: Path) -> str:
    if case == "row count":
        np.save(folder / "responses.npy", np.zeros((9, 5), dtype=np.float32))
        return "responses.npy have 9 rows but"
    if case == "column count":
        np.save(folder / "responses.npy", np.zeros((10, 4), dtype=np.float32))
        return "responses.npy have 4 vertex columns but the vertex list"
    if case == "text responses":
        np.save(folder / "responses.npy", np.full((10, 5), "a"))
        return "responses.npy has dtype <U1"
    if case == "parquet text column":
        (folder / "responses.npy").unlink()
        pq.write_table(pa.table({"a": [1.0] * 10, "b": ["x"] * 10}), folder / "responses.parquet")
        return "not numeric: b (string)"
    if case == "both responses":
        pq.write_table(pa.table({"a": [1.0] * 10}), folder / "responses.parquet")
        return "expected exactly one of ['responses.npy', 'responses.parquet'], found more than one"
    if case == "no vertices":
        (folder / "vertices.npy").unlink()
        return "expected exactly one of ['vertices.npy', 'vertices.txt'], found none"
    if case == "vertex range":
        np.save(folder / "vertices.npy", np.array([1, 2, 3, 4, 2 * N_FS]))
        return "vertices.npy must hold concatenated fsaverage indices in 0..327683"
    if case == "vertex twice":
        np.save(folder / "vertices.npy", np.array([1, 2, 3, 4, 4]))
        return "vertices.npy names a vertex twice"
    if case == "vertex text":
        (folder / "vertices.npy").unlink()
        (folder / "vertices.txt").write_text("1 2 x 4 5")
        return "vertices.txt holds non-integer entries, e.g. ['x']"
    if case == "roi json":
        (folder / "rois.json").write_text("{not json")
        return "rois.json is not valid JSON"
    if case == "roi values":
        (folder / "rois.json").write_text(json.dumps({"V1": "all"}))
        return "rois.json: ROI 'V1' must map to a list of integer vertex indices"
    if case == "noise ceiling shape":
        np.save(folder / "noise_ceiling.npy", np.ones(3))
        return "noise_ceiling.npy has shape (3,)"
    if case == "no images":
        for path in (folder / "images").iterdir():
            path.unlink()
        return "holds no image files"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["row count", "column count", "text responses", "parquet text column",
                                  "both responses", "no vertices", "vertex range", "vertex twice", "vertex text",
                                  "roi json", "roi values", "noise ceiling shape", "no images"])
def test_generic_bad_input_names_the_file(tmp_path: Path, case: str) -> None:
    write_generic(tmp_path / "s")
    fragment = _break(case, tmp_path / "s")
    with pytest.raises((InvalidInputError, MissingInputError)) as caught:
        load_subject("generic", "s", root=tmp_path)
    assert fragment in str(caught.value)


def test_generic_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="generic subject folder .*subj01 does not exist"):
        load_subject("generic", 1, root=tmp_path)
