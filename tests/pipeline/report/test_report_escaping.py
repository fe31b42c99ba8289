"""Nothing injects: script and ``onerror`` payloads in ROI labels, subject, model and folder names, errors and
commands reach every written Markdown table and HTML page only escaped."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import runroot
from pipeline.cli import main
from pipeline.sweep.report import write_sweep_report
from pipeline.sweep.table import COLUMNS, write_table
from report_helpers import planted_fit
from stages.report.markdown import markdown_cell, to_markdown

SCRIPT = "<script>alert(1)</script>"
ONERROR = "<img src=x onerror=alert(1)>"
PAYLOADS = (SCRIPT, ONERROR)
FAST = ["--dpi", "30", "--resolution", "200", "--inflated-maps", "", "--no-progress"]


def _hostile_fit(method: str, seed: int):
    """A planted fit of subject ``ONERROR`` (a valid folder name) on model ``SCRIPT`` whose ROI labels carry
    both payloads, one label per planted area."""
    fit = planted_fit(seed=seed)
    labels = {"V1v": f"V1v{SCRIPT}", "V2d": ONERROR, "PPA": f"PPA|{SCRIPT}\n`x`"}
    roi = np.array([labels.get(name, name) for name in fit.vertices["roi"]])
    return dataclasses.replace(fit, method=method, subject=ONERROR, model=SCRIPT,
                               vertices={**fit.vertices, "roi": roi})


def _assert_no_payload(folder: Path) -> int:
    """Every .md and .html file under ``folder`` holds no raw payload; returns how many were checked."""
    pages = sorted(p for p in folder.rglob("*") if p.suffix in (".md", ".html"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for payload in PAYLOADS:
            assert payload not in text, f"{page} carries {payload!r} unescaped"
    return len(pages)


def _table_rows_keep_their_cells(markdown: str) -> None:
    widths = {line.count("|") for line in markdown.splitlines()}
    assert len(widths) == 1, markdown


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for method, seed in (("factortopy", 1), ("ridge", 2)):
        fit = _hostile_fit(method, seed)
        fit.save(runroot.fit_dir(root, fit.model, fit.subject, method))
    return root


def test_markdown_cell_escapes_markup_pipes_and_line_breaks() -> None:
    assert markdown_cell(SCRIPT) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert markdown_cell("a|b\nc `d` [e](javascript:f) & \\") == \
        "a&#124;b c &#96;d&#96; &#91;e&#93;(javascript:f) &amp; &#92;"
    assert (markdown_cell(float("nan")), markdown_cell(None), markdown_cell(0.12345)) == ("", "", "0.123")
    table = pd.DataFrame({"area": [SCRIPT, "V1|V2"], "mean_layer": [1.0, np.nan]})
    _table_rows_keep_their_cells(to_markdown(table))


def test_figures_escapes_labels_and_names(hostile_root: Path) -> None:
    fit = runroot.fit_dir(hostile_root, SCRIPT, ONERROR)
    assert main(["--run-root", str(hostile_root), "figures", str(fit), *FAST]) == 0
    figures = hostile_root / "figures"
    tables = [*figures.rglob("roi_summary.md"), figures / "hierarchy_scores.md"]
    assert all(table.is_file() for table in tables) and len(tables) == 2
    assert "&lt;img src=x onerror=alert(1)&gt;" in tables[1].read_text()
    assert "| V1v&lt;script&gt;alert(1)&lt;/script&gt; |" in tables[0].read_text()
    for table in tables:
        _table_rows_keep_their_cells(table.read_text())
    assert _assert_no_payload(figures) == 4   # index.html, the viewer and the two tables


def test_compare_escapes_labels_and_names(hostile_root: Path, tmp_path: Path) -> None:
    fits = sorted(str(p.parent) for p in (hostile_root / "fits").rglob("fit.json"))
    assert main(["--run-root", str(hostile_root), "compare", *fits, "--out", str(tmp_path), "--dpi", "30",
                 "--resolution", "200", "--maps", "layer"]) == 0
    assert (tmp_path / "hierarchy_scores.md").is_file() and (tmp_path / "difference" / "viewer.html").is_file()
    assert (tmp_path / "depth_agreement.md").is_file()      # two networks (the two methods): their tables too
    assert _assert_no_payload(tmp_path) == 5


def test_sweep_table_and_page_escape_every_cell(tmp_path: Path) -> None:
    row = {column: "" for column in COLUMNS} | {
        "task": f"fit:{SCRIPT}:{ONERROR}", "kind": "fit", "model": SCRIPT, "subject": ONERROR, "method": "ridge",
        "status": "failed", "seconds": 1.0, "peak_memory_gb": 0.1, "test_r2": np.nan, "r2_nc": np.nan,
        "hierarchy_score": np.nan, "error": f"InvalidInputError: bad label {ONERROR}\n| line two",
        "command": f"bddn fit --model '{SCRIPT}' --subject '{ONERROR}'", "log": "logs/x.log"}
    table = pd.DataFrame([row], columns=list(COLUMNS))
    written = write_table(table, tmp_path)
    _table_rows_keep_their_cells(written["md"].read_text())
    write_sweep_report(tmp_path, [], table, run_root=tmp_path, models=[SCRIPT], subjects=[ONERROR])
    assert _assert_no_payload(tmp_path) == 2
