"""The comparison at the end of a sweep, in ``<run root>/sweeps/<name>/``.

Per method with finished fits: the reporter's own ``bddn compare`` over them (a grid of
every fit's maps, the subject average per model, and the networks side by side in relative
depth with each one's hierarchy score and interval and their agreement per ROI) in
``compare/<method>/``; the models x subjects grid (columns: subjects, then their average) for
the layer (relative depth when the networks have different numbers of layers), space and
scale maps; and per model the subject-average ROI profile with its hierarchy score, in
``report/``. ``report.html`` shows them with the sweep table and the comparison's tables.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline import cli
from pipeline.report.inputs import load_input, load_report_meshes
from pipeline.report.output import save_figure, save_table
from pipeline.sweep.plan import Task
from pipeline.sweep.planted import planted_table
from pipeline.sweep.table import FINISHED
from stages.fit.result import FIT_JSON, FitResult
from stages.report.config import ReportConfig, with_space_extent
from stages.report.depth import comparison_maps
from stages.report.sweep_grid import model_averages, render_model_roi_profiles, render_model_subject_grid

#: Tables of ``bddn compare`` shown on the page: file stem -> heading.
COMPARE_TABLES = {
    "networks": "Networks in relative depth: hierarchy score with its 95 % bootstrap interval (depth-invariant: "
                "the same computed on relative depth, so networks of any depth compare directly)",
    "depth_agreement": "Network-to-network agreement per ROI: Spearman rank correlation of relative depth over "
                       "the ROI's vertices, per subject fitted with both networks, averaged over subjects",
}
#: Heading of the table of fits scored against the planted answer (synthetic subjects).
PLANTED_HEADING = ("Against the planted answer: each network's counterpart of the planted block is its layer of "
                   "highest linear CKA; rank correlation of planted and shown relative depth, test R^2 / noise "
                   "ceiling, share of vertices whose map shows the counterpart, whose 90 % layer set holds it (or a "
                   "layer next to it), the sets' mean size (and from resampling alone)")


def finished_fits(tasks: Sequence[Task], table: pd.DataFrame) -> dict[str, dict[tuple[str, str], Path]]:
    """method -> (model, subject) -> fit folder, for every finished fit of the sweep."""
    status = dict(zip(table["task"], table["status"]))
    found: dict[str, dict[tuple[str, str], Path]] = {}
    for task in tasks:
        if task.kind != "fit" or status.get(task.key) not in FINISHED:
            continue
        for subject, folder in zip(task.subjects, task.outputs):
            if (folder / FIT_JSON).is_file():
                found.setdefault(task.method, {})[(task.model, subject)] = folder
    return found


def write_sweep_report(folder: Path, tasks: Sequence[Task], table: pd.DataFrame, *, run_root: Path,
                       models: Sequence[str], subjects: Sequence[str]) -> Path:
    """Render the comparison of every finished fit and write ``report.html``; returns its path."""
    cfg = ReportConfig()
    sections = []
    for method, cells in finished_fits(tasks, table).items():
        figures, tables = [], []
        paths = list(cells.values())
        if len(paths) >= 2:
            out = folder / "compare" / method
            status = cli.main(["--run-root", str(run_root), "compare", *map(str, paths), "--out", str(out)])
            if status == 0:
                figures += sorted(out.glob("*.png"))
                tables += [(heading, pd.read_parquet(out / f"{stem}.parquet"))
                           for stem, heading in COMPARE_TABLES.items() if (out / f"{stem}.parquet").is_file()]
        inputs = [load_input(path) for path in paths]
        fits = {key: item.fit for key, item in zip(cells, inputs)}
        planted = planted_table(fits, run_root=run_root)
        if planted is not None:
            save_table(planted, folder / "report" / f"{method}-planted")
            tables.append((PLANTED_HEADING, planted))
        flat, _ = load_report_meshes(inputs)
        extent = with_space_extent(cfg, list(fits.values())).space_extent
        averages = model_averages(fits)
        for map_name in comparison_maps(fits.values()):
            figure = render_model_subject_grid(fits, flat, map_name=map_name, models=models, subjects=subjects,
                                               space_extent=extent, averages=averages)
            figures.append(save_figure(figure, folder / "report" / f"{method}-grid-{map_name}", cfg=cfg)["png"])
        if averages:
            figures.append(save_figure(render_model_roi_profiles(averages), folder / "report" / f"{method}-roi-profiles",
                                       cfg=cfg)["png"])
        sections.append((method, figures, tables, _fit_labels(fits)))
    return _write_page(folder, table, sections)


def _fit_labels(fits: dict[tuple[str, str], FitResult]) -> str:
    return ", ".join(f"{model} / {subject}" for model, subject in fits)


def _write_page(folder: Path, table: pd.DataFrame,
                sections: list[tuple[str, list[Path], list[tuple[str, pd.DataFrame]], str]]) -> Path:
    parts = [f"<html><head><meta charset='utf-8'><title>sweep {html.escape(folder.name)}</title></head><body>",
             f"<h1>sweep {html.escape(folder.name)}</h1>",
             table.drop(columns=["command", "log", "worker"]).to_html(index=False, float_format=lambda v: f"{v:.3f}",
                                                                       na_rep="")]
    for method, figures, tables, labels in sections:
        parts.append(f"<h2>{html.escape(method)}</h2><p>{html.escape(labels)}</p>")
        for heading, frame in tables:
            parts += [f"<h3>{html.escape(heading)}</h3>",
                      frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="")]
        parts += [f"<figure><img src='{html.escape(str(path.relative_to(folder)))}' style='max-width:100%'>"
                  f"<figcaption>{html.escape(path.stem)}</figcaption></figure>" for path in figures]
    parts.append("</body></html>")
    page = folder / "report.html"
    partial = page.with_name(".report.html.partial")
    partial.write_text("\n".join(parts), encoding="utf-8")
    partial.replace(page)
    return page
