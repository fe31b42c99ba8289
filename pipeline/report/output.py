"""Writing the report: figure files, tables, GIfTI maps and ``index.html`` under ``<run root>/figures/``.

Layout::

    figures/index.html                      the page (relative links only: copy the folder anywhere)
    figures/<fit folder>/viewer.html        the interactive viewer of each fit (self-contained, offline)
    figures/report.json                     config and environment of this rendering
    figures/hierarchy_scores.{parquet,md}   one row per fit / planted truth
    figures/comparison.png                  rows = fits, columns = maps
    figures/average/averages.png            subject averages (models with >= 2 subjects)
    figures/average/<model>-<method>/viewer.html   their interactive viewers
    figures/<model>/<subject>-<method>/     maps (<name>.png ...), roi_summary.{parquet,md},
                                            difference_vs_truth.png, gifti/<map>.<hemi>.func.gii
    figures/<model>/<subjA+subjB+...>/<subject>-factortopy-joint/   the same for each subject of a joint fit
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import psutil
from matplotlib.figure import Figure
from tqdm import tqdm

from cache.errors import InvalidInputError
from cache.provenance import environment_record
from cache.jsondata import to_json_data
from pipeline.report.inputs import ReportInput, joint_subjects
from pipeline.report.topchannels import top_channel_figures
from pipeline.report.viewer_pages import VIEWER_PAGE, average_viewer_path, viewer_meshes, write_viewer
from stages.fit.result import FitResult
from stages.mesh import CorticalMesh
from stages.report.clusters import cluster_channels
from stages.report.compare import average_fits, fit_label, render_comparison_grid, render_difference
from stages.report.config import ReportConfig, with_space_extent
from stages.report.depth import comparison_maps
from stages.report.export import write_gifti_maps
from stages.report.figures import iter_fit_figures
from stages.report.html import PageFigure, PageSection, PageTable, render_page
from stages.report.maps import scalar_exports
from stages.report.markdown import to_markdown
from stages.report.summaries import score_hierarchy, summarise_rois


#: Fewest fits rendered in several processes (below it, one process is quicker).
PARALLEL_MIN_FITS = 3
#: Memory set aside per rendering process.
FIGURE_WORKER_BYTES = 2 << 30


def save_figure(figure: Figure, stem: Path, *, cfg: ReportConfig) -> dict[str, Path]:
    """Save ``figure`` as ``stem.<format>`` for each configured format (temporary name, then rename)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in cfg.formats:
        target = stem.with_name(f"{stem.name}.{fmt}")
        partial = stem.with_name(f".{stem.name}.partial.{fmt}")
        figure.savefig(partial, dpi=cfg.dpi, format=fmt, bbox_inches="tight")
        partial.replace(target)
        written[fmt] = target
    return written


def save_table(table: pd.DataFrame, stem: Path) -> dict[str, Path]:
    """Write ``stem.parquet`` and ``stem.md``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": stem.with_suffix(".parquet"), "md": stem.with_suffix(".md")}
    for fmt, target in paths.items():
        partial = target.with_name(f".{target.name}.partial")
        if fmt == "parquet":
            table.to_parquet(partial, index=False)
        else:
            partial.write_text(to_markdown(table))
        partial.replace(target)
    return paths


def write_report(figures_root: Path, inputs: Sequence[ReportInput], flat: CorticalMesh, inflated: CorticalMesh,
                 cfg: ReportConfig, *, progress: bool = True, reproduce: Sequence[str] = (),
                 images: Sequence[Path] = (), workers: int = 1) -> Path:
    """Render every input and the comparisons, then write ``index.html``; returns its path.

    ``images``: input images for top-channel figures of fits that saved bottlenecks and read-out.
    ``workers``: processes rendering fits side by side (see :func:`figure_workers`); 1 renders in this one.
    """
    figures_root.mkdir(parents=True, exist_ok=True)
    cfg = with_space_extent(cfg, [item.fit for item in inputs])
    meshes = viewer_meshes(inflated, flat, cfg) if cfg.viewer else None
    truths = _truths(inputs)
    jobs = [(figures_root, item, flat, inflated, cfg, reproduce, images, truths.get(item.fit.subject), meshes)
            for item in inputs]
    sections, scores = [], []
    for section, score_row in tqdm(_render_fits(jobs, workers), total=len(jobs), desc="figures", unit="fit",
                                   disable=not progress):
        sections.append(section)
        scores.append(score_row)
    table = pd.DataFrame(scores)
    if "significant" in table:   # a count, blank for planted truths
        table["significant"] = table["significant"].astype("Int64")
    overview = _write_overview(figures_root, inputs, table, flat, cfg, reproduce, meshes)
    record = {"config": to_json_data(cfg), "environment": environment_record(),
              "inputs": [str(item.source) for item in inputs]}
    (figures_root / "report.json").write_text(json.dumps(record, indent=2, default=str))
    page = render_page([overview, *sections], title="bddn report: networks mapped onto the cortex",
                       intro=f"{len(inputs)} fit(s) and planted truth(s). Maps are drawn on fsaverage "
                             f"({flat.mesh}) flat sheets; grey = outside the fitted vertices.")
    target = figures_root / "index.html"
    partial = figures_root / ".index.html.partial"
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return target


def figure_workers(n_inputs: int) -> int:
    """Processes worth rendering ``n_inputs`` fits with: one per core and per 2 GB of available memory, and
    1 below :data:`PARALLEL_MIN_FITS` fits, where starting a process (importing the plotting stack, about 4 s
    on a small machine) costs more than it saves. Matplotlib draws on one core, so on two cores the demo's
    five fits render in about two thirds of the time."""
    if n_inputs < PARALLEL_MIN_FITS:
        return 1
    by_memory = int(psutil.virtual_memory().available // FIGURE_WORKER_BYTES)
    return max(1, min(n_inputs, os.cpu_count() or 1, by_memory))


def _render_fits(jobs: Sequence[tuple], workers: int) -> Iterator[tuple[PageSection, dict]]:
    """``_write_fit(*job)`` for each job, in order; in ``workers`` fresh processes when more than one."""
    if workers <= 1 or len(jobs) <= 1:
        yield from (_write_fit_job(job) for job in jobs)
        return
    # spawn, not fork: the parent may hold thread pools (torch, Arrow) that a forked child must not inherit
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
        yield from pool.map(_write_fit_job, jobs)


def _write_fit_job(job: tuple) -> tuple[PageSection, dict]:
    root, item, flat, inflated, cfg, reproduce, images, truth, meshes = job
    return _write_fit(root, item, flat, inflated, cfg, reproduce, images, truth=truth, meshes=meshes)


def _write_fit(root: Path, item: ReportInput, flat: CorticalMesh, inflated: CorticalMesh, cfg: ReportConfig,
               reproduce: Sequence[str], images: Sequence[Path], *, truth: FitResult | None,
               meshes: tuple[CorticalMesh, CorticalMesh] | None) -> tuple[PageSection, dict]:
    fit, folder = item.fit, root / item.slug
    clusters = None if item.readout is None else _clusters(item, cfg)
    figures = [_page_figure(root, name, title, figure, folder / name, cfg)
               for name, title, figure in iter_fit_figures(fit, flat, inflated, clusters=clusters,
                                                           inflated_maps=cfg.inflated_maps,
                                                           resolution=cfg.resolution, crop=cfg.crop,
                                                           space_extent=cfg.space_extent, alpha=cfg.alpha)]
    if images:
        figures += [_page_figure(root, f"top channels: {stem}", "RGB = each ROI's 3 principal read-out directions",
                                 figure, folder / "top_channels" / stem, cfg)
                    for stem, figure in top_channel_figures(item, images)]
    summary = summarise_rois(fit, alpha=cfg.alpha)
    tables = []
    if not summary.empty:
        paths = save_table(summary, folder / "roi_summary")
        restricted = "" if cfg.alpha is None or "q_value" not in fit.vertices else \
            f", vertices significant at q ≤ {cfg.alpha:g} only"
        tables.append(PageTable(f"ROI summary (_low/_high: 95 % bootstrap intervals{restricted})",
                                summary.drop(columns=[c for c in summary if c.startswith("profile_sd")]),
                                _relative(root, paths)))
    write_gifti_maps(fit, scalar_exports(fit, clusters=clusters), folder / "gifti", n_mesh_vertices=flat.lh.n_vertices)
    links = {}
    if meshes is not None:
        viewer = write_viewer(folder / VIEWER_PAGE, fit, meshes, cfg, clusters=clusters,
                              truth=truth if fit.method != "truth" else None)
        links["interactive viewer"] = viewer.relative_to(root).as_posix()
    score = score_hierarchy(fit, summary, alpha=cfg.alpha)
    significance = _significance_metrics(fit, cfg.alpha)
    metrics = {"hierarchy score (Spearman)": score.spearman,
               "hierarchy score 95 % interval": f"[{score.low:.3f}, {score.high:.3f}]",
               "hierarchy score ceiling": score.ceiling, "hierarchy p-value": score.p_value, **significance,
               "ranked areas": score.n_areas, "mean normalised entropy": score.mean_entropy,
               "vertices": fit.n_vertices, "layers": len(fit.layer_names),
               **{k: v for k, v in fit.metrics.items() if isinstance(v, (int, float, str))}}
    section = PageSection(anchor=item.slug.replace("/", "-"), title=fit_label(fit), text=f"source: {item.source}",
                          figures=figures, tables=tables, metrics=metrics,
                          provenance={"config": fit.config, "provenance": fit.provenance},
                          reproduce=[*_reproduce_fit(item), *reproduce], links=links)
    row = {"fit": fit_label(fit), "model": fit.model, "subject": fit.subject, "method": fit.method,
           "hierarchy_spearman": score.spearman, "hierarchy_low": score.low, "hierarchy_high": score.high,
           "hierarchy_ceiling": score.ceiling, "hierarchy_p": score.p_value,
           "ranked_areas": score.n_areas,
           "mean_entropy": score.mean_entropy,
           **{name: fit.metrics[name] for name in ("mean_r2_test", "mean_r2_val", "median_r2_test_nc")
              if isinstance(fit.metrics.get(name), (int, float))}}
    if "q_value" in fit.vertices:
        row["significant"] = int(np.sum(np.asarray(fit.vertices["q_value"]) <= (cfg.alpha or 0.05)))
    if "layer_set_size" in fit.vertices:
        row["mean_layer_set_size"] = float(np.mean(fit.vertices["layer_set_size"]))
        row["mean_layer_confidence"] = float(np.mean(fit.vertices["layer_confidence"]))
    return section, row


def _significance_metrics(fit: FitResult, alpha: float | None) -> dict[str, object]:
    """How many vertices predict the test images significantly (q <= alpha, 0.05 by default), for the page."""
    if "q_value" not in fit.vertices:
        return {}
    level = 0.05 if alpha is None else alpha
    passed = int(np.sum(np.asarray(fit.vertices["q_value"]) <= level))
    return {f"vertices significant at q ≤ {level:g} (FDR)": f"{passed} of {fit.n_vertices}"}


def _write_overview(root: Path, inputs: Sequence[ReportInput], scores: pd.DataFrame, flat: CorticalMesh,
                    cfg: ReportConfig, reproduce: Sequence[str],
                    meshes: tuple[CorticalMesh, CorticalMesh] | None) -> PageSection:
    figures, tables, links = [], [], {}
    if not scores.empty:
        tables.append(PageTable("Hierarchy scores", scores, _relative(root, save_table(scores, root / "hierarchy_scores"))))
    fits = [item.fit for item in inputs]
    maps = comparison_maps(fits)
    figures.append(_page_figure(root, "comparison", "rows = fits, columns = maps",
                                render_comparison_grid(fits, flat, maps=maps, resolution=cfg.resolution // 2,
                                                       space_extent=cfg.space_extent),
                                root / "comparison", cfg))
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for fit in fits:
        groups[(fit.model, fit.method)].append(fit)
    averaged = {key: average_fits(group) for key, group in groups.items() if len({f.subject for f in group}) >= 2}
    averages = list(averaged.values())
    if averages:
        figures.append(_page_figure(root, "subject averages", "per model, averaged per fsaverage vertex",
                                    render_comparison_grid(averages, flat, maps=maps,
                                                           resolution=cfg.resolution // 2,
                                                           space_extent=cfg.space_extent),
                                    root / "average" / "averages", cfg))
        for (model, method), average in averaged.items() if meshes is not None else ():
            target = average_viewer_path(root, model, method)
            write_viewer(target, average, meshes, cfg, title=f"{model}: {average.subject} subjects ({method})")
            links[f"viewer: {model} subject average ({method})"] = target.relative_to(root).as_posix()
    truths = _truths(inputs)
    for item in inputs:
        truth = truths.get(item.fit.subject)
        if truth is not None and item.fit.method != "truth":
            figures.append(_page_figure(root, f"{fit_label(item.fit)} minus planted truth", "",
                                        render_difference(truth, item.fit, flat, resolution=cfg.resolution // 2),
                                        root / item.slug / "difference_vs_truth", cfg))
    return PageSection(anchor="overview", title="Overview",
                       text="Hierarchy score: Spearman correlation between the visual-hierarchy rank of each "
                            "area (V1=1, V2=2, V3=3, V4=4, higher areas=5, tied) and its mean selected layer, with its "
                            "95 % bootstrap interval over vertices within areas (hierarchy_low, hierarchy_high); the "
                            "ceiling is the best value the tied ranks allow; mean "
                            "entropy: how decisively layers are chosen (0 one layer, 1 uniform); significant: vertices "
                            "whose test prediction passes the false discovery rate "
                            + (f"{cfg.alpha:g}" if cfg.alpha is not None else "0.05") + ".",
                       figures=figures, tables=tables, reproduce=reproduce, links=links)


def _truths(inputs: Sequence[ReportInput]) -> dict[str, FitResult]:
    """Subject -> its planted truth, among ``inputs``."""
    return {item.fit.subject: item.fit for item in inputs if item.fit.method == "truth"}


def _clusters(item: ReportInput, cfg: ReportConfig) -> np.ndarray | None:
    """Channel clusters of a fit's read-out, or None (with a warning) when it cannot be clustered."""
    try:
        return cluster_channels(item.readout, cfg.clusters)
    except InvalidInputError as error:
        warnings.warn(f"{item.source}: no channel-cluster map: {error}", stacklevel=2)
        return None


def _page_figure(root: Path, name: str, title: str, figure: Figure, stem: Path, cfg: ReportConfig) -> PageFigure:
    paths = _relative(root, save_figure(figure, stem, cfg=cfg))
    return PageFigure(title=name, caption=title, path=paths["png"],
                      downloads={fmt: path for fmt, path in paths.items() if fmt != "png"})


def _relative(root: Path, paths: dict[str, Path]) -> dict[str, str]:
    return {fmt: path.relative_to(root).as_posix() for fmt, path in paths.items()}


def _reproduce_fit(item: ReportInput) -> Iterable[str]:
    fit = item.fit
    number = _subject_number(fit.subject)
    if fit.method == "truth":
        return [f"bddn synth --subjects {number} --model {fit.model}"]
    together = joint_subjects(fit)
    if together:
        numbers = " ".join(_subject_number(name) for name in together)
        return [f"bddn fit --subjects {numbers} --model {fit.model}  # data and options: see config below"]
    method = "" if fit.method == "factortopy" else f" --method {fit.method}"
    return [f"bddn fit --subject {number} --model {fit.model}{method}  # data and options: see config below"]


def _subject_number(name: str) -> str:
    return "".join(ch for ch in name if ch.isdigit()).lstrip("0") or name
