"""``bddn compare``: several fits side by side, subject averages and a difference map."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cache.errors import InvalidInputError
from cache.provenance import hash_strings
from pipeline import runroot
from pipeline.commands.figures import (
    add_alpha_argument, add_space_extent_argument, add_viewer_arguments, build_report_config, parse_list,
)
from pipeline.report.inputs import load_input, load_report_meshes
from pipeline.report.output import save_figure, save_table
from pipeline.report.viewer_pages import VIEWER_PAGE, average_viewer_path, viewer_meshes, write_difference_viewer, write_viewer
from stages.fit.result import FitResult
from stages.mesh import CorticalMesh
from stages.report.agreement import ALL_VERTICES, depth_agreement
from stages.report.compare import (
    average_fits, compare_hierarchy_scores, fit_label, render_comparison_grid, render_difference,
)
from stages.report.config import ReportConfig, with_space_extent
from stages.report.depth import comparison_maps
from stages.report.networks import (
    network_fits, network_summaries, render_depth_maps, render_depth_profiles, score_text,
)

NAME = "compare"
HELP = ("compare fits: a grid (rows = fits, columns = maps), the subject average per model, for two fits "
        "of the same subject their difference, for every pair whether their hierarchy scores differ beyond "
        "their 95 % bootstrap intervals, for two or more networks their relative-depth maps side by side with "
        "each one's hierarchy score and the networks' agreement per ROI, and interactive viewer pages; written "
        "to <run root>/figures/compare/<id>/")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``FIT FIT ...`` plus the map columns and the figure options of ``bddn figures``."""
    parser.add_argument("fits", nargs="+", type=Path, metavar="FIT",
                        help="two or more fit folders or planted truths; with exactly two of one subject the "
                             "second minus the first is drawn too")
    parser.add_argument("--maps", type=parse_list, default=None,
                        help="comma-separated map columns (layer, relative_depth, space, scale, r2_test, r2_val, "
                             "r2_test_nc, ...) (default layer,space,scale; relative_depth,space,scale when the "
                             "networks have different numbers of layers)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default <run root>/figures/compare/<id>)")
    parser.add_argument("--formats", type=parse_list, default=None, help="comma-separated figure formats starting with png")
    parser.add_argument("--dpi", type=int, default=None, help="PNG resolution")
    parser.add_argument("--resolution", type=int, default=None, help="raster pixels across one flatmap")
    add_space_extent_argument(parser)
    add_alpha_argument(parser)
    add_viewer_arguments(parser)
    parser.add_argument("--subjects-dir", type=Path, default=None, help="FreeSurfer subjects folder for larger meshes")
    parser.add_argument("--config", type=Path, default=None, help="TOML preset with a [figures] table")


def run(args: argparse.Namespace) -> int:
    """Render the comparison figures and print where they are."""
    if len(args.fits) < 2:
        raise InvalidInputError("bddn compare needs at least two fits")
    cfg = build_report_config(args)
    run_root = runroot.resolve_run_root(args.run_root)
    inputs = [load_input(path) for path in args.fits]
    fits = [item.fit for item in inputs]
    cfg = with_space_extent(cfg, fits)
    maps = args.maps or comparison_maps(fits)
    flat, inflated = load_report_meshes(inputs, subjects_dir=args.subjects_dir)
    out = args.out or runroot.figures_dir(run_root) / "compare" / hash_strings([str(p.resolve()) for p in args.fits])[:12]
    written = [save_figure(render_comparison_grid(fits, flat, maps=maps, resolution=cfg.resolution // 2,
                                                      space_extent=cfg.space_extent), out / "grid", cfg=cfg)]
    by_model: dict[tuple[str, str], list] = {}
    for fit in fits:
        by_model.setdefault((fit.model, fit.method), []).append(fit)
    averaged = {key: average_fits(group) for key, group in by_model.items() if len({f.subject for f in group}) >= 2}
    averages = list(averaged.values())
    if averages:
        written.append(save_figure(render_comparison_grid(averages, flat, maps=maps,
                                                                  resolution=cfg.resolution // 2,
                                                                  space_extent=cfg.space_extent), out / "averages", cfg=cfg))
    if len(fits) == 2 and fits[0].subject == fits[1].subject:
        written.append(save_figure(render_difference(fits[0], fits[1], flat, resolution=cfg.resolution // 2), out / "difference", cfg=cfg))
    if cfg.viewer:
        meshes = viewer_meshes(inflated, flat, cfg)
        pages = [write_viewer(average_viewer_path(out, model, method), average, meshes, cfg,
                              title=f"{model}: {average.subject} subjects ({method})")
                 for (model, method), average in averaged.items()]
        if len(fits) == 2 and fits[0].subject == fits[1].subject:
            pages.append(write_difference_viewer(out / "difference" / VIEWER_PAGE, fits[0], fits[1], meshes, cfg))
        written += [{"html": page} for page in pages]
    hierarchy = compare_hierarchy_scores(fits, alpha=cfg.alpha)
    written.append(save_table(hierarchy, out / "hierarchy_scores"))
    networks = network_fits(fits)
    lines = _write_networks(fits, networks, flat, out, cfg, written) if len(networks) >= 2 else []
    for paths in written:
        for path in paths.values():
            print(path)
    for row in hierarchy.itertuples(index=False):
        verdict = "differ beyond their 95 % intervals" if row.differ else "do not differ beyond their 95 % intervals"
        print(f"hierarchy score: {row.first} {row.spearman_first:.3f} [{row.low_first:.3f}, {row.high_first:.3f}] vs "
              f"{row.second} {row.spearman_second:.3f} [{row.low_second:.3f}, {row.high_second:.3f}]: {verdict}")
    for line in lines:
        print(line)
    print(f"compared: {', '.join(fit_label(fit) for fit in fits)}", file=sys.stderr)
    return 0


def _write_networks(fits: list[FitResult], networks: dict[str, FitResult], flat: CorticalMesh, out: Path,
                    cfg: ReportConfig, written: list[dict[str, Path]]) -> list[str]:
    """The networks side by side in relative depth (maps, ROI chart, ``networks`` and ``depth_by_area`` tables)
    and their agreement per ROI (``depth_agreement``); appends the files to ``written``, returns lines to print."""
    scores, areas = network_summaries(networks, alpha=cfg.alpha)
    written.append(save_figure(render_depth_maps(networks, flat, scores, resolution=cfg.resolution // 3),
                               out / "relative_depth", cfg=cfg))
    if not areas.empty:
        written.append(save_figure(render_depth_profiles(areas, scores), out / "depth_profiles", cfg=cfg))
    written += [save_table(scores, out / "networks"), save_table(areas, out / "depth_by_area")]
    agreement = depth_agreement(fits)
    if not agreement.empty:
        written.append(save_table(agreement, out / "depth_agreement"))
    lines = [f"network {row['network']}: {row['layers']} layers, {row['subjects']} subject(s), hierarchy score "
             f"{score_text(row)} (depth-invariant: the same on relative depth)" for row in scores.to_dict("records")]
    overall = agreement[agreement["area"] == ALL_VERTICES] if not agreement.empty else agreement
    lines += [f"relative-depth agreement {row.first} vs {row.second}: Spearman {row.spearman:.3f} over all shared "
              f"vertices ({row.n_subjects} subject(s))" for row in overall.itertuples(index=False)]
    return lines
