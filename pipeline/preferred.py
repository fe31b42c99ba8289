"""What each area prefers: an image set ranked by each ROI's mean predicted response (``bddn preferred``).

:func:`roi_means` averages a fit's predictions (``pipeline.predictions``, images x vertices) over the
vertices of each ROI, block by block through xarray, so a large set never sits in memory whole;
:func:`write_preferred_page` writes the ranking (``preferred.parquet``: one row per image, one column
per ROI) and a self-contained HTML page with the top and bottom images of each ROI as a grid of
thumbnails with their predicted values. The folder is written as ``<name>.partial`` and renamed when
complete.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.imagesets.folder import decode_image

PAGE = "index.html"
TABLE = "preferred.parquet"
THUMBNAIL = 96


def roi_means(predictions: Any) -> pd.DataFrame:
    """Mean predicted response of each ROI's vertices per image (vertices without an ROI left out).

    Args:
        predictions: an ``xarray.DataArray`` (image, vertex) with ``image_id`` and ``roi`` coordinates.

    Returns:
        DataFrame indexed by image id, one float column per ROI (sorted by name), in the predictions' units.
    """
    roi = np.asarray(predictions.roi.values.tolist(), dtype=str)
    keep = np.flatnonzero(roi != "")
    labelled = predictions.isel(vertex=keep).assign_coords(roi=("vertex", roi[keep]))
    means = labelled.groupby("roi").mean("vertex").compute()
    frame = pd.DataFrame(np.asarray(means.transpose("image", "roi").values, dtype=np.float64),
                         index=pd.Index(predictions.image_id.values.tolist(), name="image_id"),
                         columns=[str(name) for name in means.roi.values])
    return frame[sorted(frame.columns)]


def write_preferred_page(folder: Path, means: pd.DataFrame, *, files: Mapping[str, Path], top: int,
                         title: str, units: str) -> Path:
    """Write ``preferred.parquet`` and ``index.html`` (top and bottom ``top`` images of each ROI) into ``folder``.

    ``files``: image id -> file, for thumbnails (ids without a file are shown by id). Returns the page's path.
    """
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    ranks = means.rank(ascending=False, method="first").astype(int).add_prefix("rank_")
    pd.concat([means, ranks], axis=1).to_parquet(partial / TABLE)
    thumbnails: dict[str, str] = {}
    sections = []
    for roi in means.columns:
        order = means[roi].sort_values(ascending=False)
        rows = [("top", order.head(top)), ("bottom", order.tail(top).iloc[::-1])]
        cells = "".join(
            f"<div class='row'><h3>{label}</h3>" + "".join(_cell(image_id, value, files, thumbnails)
                                                          for image_id, value in chosen.items()) + "</div>"
            for label, chosen in rows)
        sections.append(f"<section><h2>{html.escape(roi)}</h2>{cells}</section>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1em} .row{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-end}"
            " figure{margin:0;text-align:center;font-size:11px} h3{width:4em;margin:0}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>Images ranked by each ROI's mean predicted response ({html.escape(units)}); "
            f"the full ranking is in {TABLE}.</p>{''.join(sections)}</body></html>")
    (partial / PAGE).write_text(page, encoding="utf-8")
    retired = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, retired)
    os.replace(partial, folder)
    shutil.rmtree(retired, ignore_errors=True)
    return folder / PAGE


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
