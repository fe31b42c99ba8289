"""The sweep table ``<run root>/sweeps/<name>/sweep.parquet``: one row per task.

Columns: ``task``, ``kind`` (store/fit), ``model``, ``subject`` (``+``-joined for a joint
fit), ``method``, ``status`` (done, skipped = up to date, failed, blocked = its store
failed), ``attempts`` (times the task ran in this sweep: 2 after a retry, 0 when it did not
run; each attempt's output is in its log), ``seconds``, ``peak_memory_gb`` (peak resident
memory of the worker process during the task), ``device``, ``worker`` (host:pid),
``test_r2`` (mean test R^2), ``r2_nc`` (median test R^2 / noise ceiling),
``hierarchy_score`` (Spearman of ROI hierarchy rank vs mean selected layer;
``stages.report.summaries``), ``error``, ``command`` (the ``bddn`` command of the task,
which reruns it alone) and ``log``. For a joint fit the metrics are means over its
subjects. Also written as ``sweep.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from pipeline.report.output import save_table
from pipeline.sweep.plan import Task
from stages.fit.result import FIT_JSON, FitResult
from stages.report.summaries import score_hierarchy

COLUMNS = ("task", "kind", "model", "subject", "method", "status", "attempts", "seconds", "peak_memory_gb", "device",
           "worker", "test_r2", "r2_nc", "hierarchy_score", "error", "command", "log")
#: Statuses whose fit folders hold a finished fit.
FINISHED = ("done", "skipped")


def fit_metrics(task: Task) -> dict[str, float]:
    """Mean over the task's fit folders of test R^2, median R^2/NC and the hierarchy score (NaN when absent)."""
    values: dict[str, list[float]] = {"test_r2": [], "r2_nc": [], "hierarchy_score": []}
    for folder in task.outputs:
        if not (folder / FIT_JSON).is_file():
            continue
        fit = FitResult.load(folder)
        values["test_r2"].append(float(fit.metrics.get("mean_r2_test", np.nan)))
        values["r2_nc"].append(float(fit.metrics.get("median_r2_test_nc", np.nan)))
        values["hierarchy_score"].append(score_hierarchy(fit).spearman)
    return {name: float(np.mean(found)) if found else float("nan") for name, found in values.items()}


def build_table(tasks: Sequence[Task], rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The table in plan order, metrics filled in for finished fits."""
    by_key = {row["task"]: row for row in rows}
    records = []
    for task in tasks:
        row = {"test_r2": np.nan, "r2_nc": np.nan, "hierarchy_score": np.nan, "log": "", **by_key[task.key]}
        if task.kind == "fit" and row["status"] in FINISHED:
            row.update(fit_metrics(task))
        records.append({column: row.get(column) for column in COLUMNS})
    table = pd.DataFrame(records, columns=list(COLUMNS))
    for column in ("seconds", "peak_memory_gb", "test_r2", "r2_nc", "hierarchy_score"):
        table[column] = table[column].astype(np.float64)
    table["attempts"] = table["attempts"].astype(np.int64)
    return table


def write_table(table: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """``sweep.parquet`` and ``sweep.md`` in ``folder``."""
    return save_table(table, folder / "sweep")
