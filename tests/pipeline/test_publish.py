"""Results swapped in only on success: a report or fit folder is never left half-replaced by a failed run."""

from __future__ import annotations

import pytest

from pipeline.publish import STAGING_FOLDER, publish, publish_entries


def _report(folder, text):
    (folder / "fit_a").mkdir(parents=True)
    (folder / "fit_a" / "map.png").write_text(text)
    (folder / "index.html").write_text(text)


def test_a_failed_report_leaves_the_previous_one_and_others_outputs(tmp_path):
    figures = tmp_path / "figures"
    _report(figures, "old")
    (figures / "compare").mkdir()
    (figures / "compare" / "kept.txt").write_text("compare output")

    def fail_halfway(staged):
        (staged / "fit_a").mkdir(parents=True)
        (staged / "fit_a" / "map.png").write_text("new")
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        publish_entries(figures, tmp_path, fail_halfway, last="index.html")
    assert (figures / "index.html").read_text() == "old" and (figures / "fit_a" / "map.png").read_text() == "old"
    page = publish_entries(figures, tmp_path, lambda staged: _report(staged, "new"), last="index.html")
    assert page.read_text() == "new" and (figures / "fit_a" / "map.png").read_text() == "new"
    assert (figures / "compare" / "kept.txt").read_text() == "compare output"
    assert list((tmp_path / STAGING_FOLDER).iterdir()) == []


def test_a_failed_fit_folder_write_keeps_the_old_folder(tmp_path):
    fit = tmp_path / "fits" / "model" / "subj01"
    fit.mkdir(parents=True)
    (fit / "fit.json").write_text("old")

    def fail(staged):
        staged.mkdir(parents=True)
        (staged / "fit.json").write_text("new")
        raise OSError("disk gone")

    with pytest.raises(OSError):
        publish(fit, tmp_path, fail)
    assert (fit / "fit.json").read_text() == "old"
    publish(fit, tmp_path, lambda staged: (staged.mkdir(parents=True), (staged / "fit.json").write_text("new")))
    assert (fit / "fit.json").read_text() == "new"
    assert list((tmp_path / STAGING_FOLDER).iterdir()) == []
