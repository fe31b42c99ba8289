"""What each area prefers: an image set ranked by each ROI's and each channel cluster's mean predicted response.

:func:`group_means` averages a fit's predictions (``pipeline.predictions``, images x vertices) over the
vertices of each group, block by block through xarray, so a large set never sits in memory whole:
:func:`roi_means` groups by ROI, :func:`cluster_means` by channel cluster. The clusters are the
report's (``stages.report.clusters.cluster_channels`` on the read-out W, default settings, as the
channel map of ``bddn figures`` draws them; the paper's top-channel figure ranks images this way):
only FactorTopy fits have them, a ridge read-out has no shared channel space.
:func:`subject_average` averages several fits' ROI means (each subject's ROI mean first, then the
mean over subjects, for the ROIs every subject has). :func:`write_preferred_page` writes the ranking
(``preferred.parquet``: one row per image, one column per ROI; ``clusters.parquet`` likewise per
cluster) and a self-contained HTML page with the top and bottom images of each ROI and cluster as a
grid of thumbnails with their predicted values. The folder is written as ``<name>.partial`` and
renamed when complete.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from cache.errors import InvalidInputError
from pipeline.imagesets.folder import decode_image
from pipeline.report.inputs import read_readout
from stages.report.clusters import ClusterConfig, cluster_channels

PAGE = "index.html"
TABLE = "preferred.parquet"
CLUSTER_TABLE = "clusters.parquet"
THUMBNAIL = 96


def group_means(predictions: Any, labels: np.ndarray) -> pd.DataFrame:
    """Mean predicted response of each group's vertices per image (vertices labelled ``""`` left out).

    Args:
        predictions: an ``xarray.DataArray`` (image, vertex) with an ``image_id`` coordinate.
        labels: str array of shape (n_vertices,), each vertex's group.

    Returns:
        DataFrame indexed by image id, one float column per group (sorted by name), in the predictions' units.
    """
    labels = np.asarray(labels, dtype=str)
    keep = np.flatnonzero(labels != "")
    labelled = predictions.isel(vertex=keep).assign_coords(group=("vertex", labels[keep]))
    means = labelled.groupby("group").mean("vertex").compute()
    frame = pd.DataFrame(np.asarray(means.transpose("image", "group").values, dtype=np.float64),
                         index=pd.Index(predictions.image_id.values.tolist(), name="image_id"),
                         columns=[str(name) for name in means.group.values])
    return frame[sorted(frame.columns)]


def roi_means(predictions: Any) -> pd.DataFrame:
    """:func:`group_means` by the predictions' ``roi`` coordinate: one column per ROI."""
    return group_means(predictions, np.asarray(predictions.roi.values.tolist(), dtype=str))


def channel_clusters(fit_folder: Path, n_vertices: int, cfg: ClusterConfig = ClusterConfig()) -> np.ndarray | None:
    """Each vertex's channel cluster as ``"cluster_XX"`` (the report's clustering of the read-out W), or None for a
    fit without a FactorTopy read-out (ridge) or whose read-out cannot be clustered (too few vertices)."""
    readout = read_readout(fit_folder, n_vertices)
    if readout is None:
        return None
    try:
        labels = cluster_channels(readout, cfg)
    except InvalidInputError:
        return None
    return np.asarray([f"cluster_{label:02d}" for label in labels])


def cluster_means(predictions: Any, labels: np.ndarray) -> pd.DataFrame:
    """:func:`group_means` by channel cluster (labels from :func:`channel_clusters`): one column per cluster."""
    return group_means(predictions, labels)


def subject_average(per_subject: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The mean over subjects of each subject's ROI means (:func:`roi_means` of each fit), for the ROIs every
    subject has.

    Raises:
        InvalidInputError: the fits predicted different images, or share no ROI.
    """
    first = per_subject[0]
    for other in per_subject[1:]:
        if sorted(other.index) != sorted(first.index):
            raise InvalidInputError("the fits were given different images; the subject average needs one image set")
    shared = sorted(set.intersection(*(set(frame.columns) for frame in per_subject)))
    if not shared:
        raise InvalidInputError("the fits share no ROI: there is nothing to average over subjects")
    stacked = np.stack([frame.loc[first.index, shared].to_numpy() for frame in per_subject])
    return pd.DataFrame(stacked.mean(axis=0), index=first.index, columns=shared)


def write_preferred_page(folder: Path, means: pd.DataFrame, *, files: Mapping[str, Path], top: int,
                         title: str, units: str, clusters: pd.DataFrame | None = None,
                         cluster_sizes: Mapping[str, int] | None = None, note: str = "") -> Path:
    """Write ``preferred.parquet`` (and ``clusters.parquet``) and ``index.html`` into ``folder``: the top and
    bottom ``top`` images of each ROI, then of each channel cluster.

    Args:
        means: images x ROIs (:func:`roi_means` or :func:`subject_average`).
        files: image id -> file, for thumbnails (ids without a file are shown by id).
        clusters: images x channel clusters (:func:`cluster_means`), or None.
        cluster_sizes: cluster -> its number of vertices, shown in its heading.
        note: a sentence on the page under the title (what was averaged, why clusters are absent).

    Returns:
        the page's path.
    """
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    thumbnails: dict[str, str] = {}
    sections = _ranked(partial / TABLE, means, files, thumbnails, top=top, headings={})
    if clusters is not None:
        headings = {name: f"{name} ({cluster_sizes[name]} vertices)" for name in clusters.columns
                    if cluster_sizes and name in cluster_sizes}
        sections += ("<h2>Channel clusters</h2><p>Images ranked by each channel cluster's mean predicted response "
                     f"(vertices grouped by their read-out weights, as the report's channel map); the full ranking "
                     f"is in {CLUSTER_TABLE}.</p>"
                     + _ranked(partial / CLUSTER_TABLE, clusters, files, thumbnails, top=top, headings=headings))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1em} .row{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-end}"
            " figure{margin:0;text-align:center;font-size:11px} h3{width:4em;margin:0}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Images ranked by each ROI's mean predicted response "
            f"({html.escape(units)}); the full ranking is in {TABLE}.{' ' + html.escape(note) if note else ''}</p>{sections}</body></html>")
    (partial / PAGE).write_text(page, encoding="utf-8")
    retired = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, retired)
    os.replace(partial, folder)
    shutil.rmtree(retired, ignore_errors=True)
    return folder / PAGE


def _ranked(table: Path, means: pd.DataFrame, files: Mapping[str, Path], thumbnails: dict[str, str], *, top: int,
            headings: Mapping[str, str]) -> str:
    """Write ``means`` with each column's ranks to ``table``; return one HTML section per column, its top and
    bottom ``top`` images."""
    ranks = means.rank(ascending=False, method="first").astype(int).add_prefix("rank_")
    pd.concat([means, ranks], axis=1).to_parquet(table)
    sections = []
    for name in means.columns:
        order = means[name].sort_values(ascending=False)
        rows = [("top", order.head(top)), ("bottom", order.tail(top).iloc[::-1])]
        cells = "".join(
            f"<div class='row'><h3>{label}</h3>" + "".join(_cell(image_id, value, files, thumbnails)
                                                          for image_id, value in chosen.items()) + "</div>"
            for label, chosen in rows)
        sections.append(f"<section><h2>{html.escape(headings.get(name, name))}</h2>{cells}</section>")
    return "".join(sections)


def _cell(image_id: str, value: float, files: Mapping[str, Path], thumbnails: dict[str, str]) -> str:
    """One figure: the image's thumbnail (embedded PNG) or its id, and its predicted value."""
    if image_id not in thumbnails and image_id in files:
        image = decode_image(files[image_id])
        image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        thumbnails[image_id] = base64.b64encode(buffer.getvalue()).decode("ascii")
    picture = (f"<img alt='{html.escape(image_id)}' src='data:image/png;base64,{thumbnails[image_id]}'>"
               if image_id in thumbnails else f"<div>{html.escape(image_id)}</div>")
    return f"<figure>{picture}<figcaption>{html.escape(image_id)}<br>{value:.3f}</figcaption></figure>"
