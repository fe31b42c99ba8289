"""Markdown tables (``roi_summary.md``, ``hierarchy_scores.md``, ``sweep.md``) with every cell escaped.

Cells carry text the project does not control: ROI labels from atlas files, subject names
from folder names, model ids, error messages and commands. Markdown renderers pass raw HTML
through, so a label such as ``<script>alert(1)</script>`` would run in whoever opens the file,
and a ``|`` or a line break would split the table. :func:`markdown_cell` is the one escaping
of a cell: ``&``, ``<`` and ``>`` become HTML entities (shown as the characters, never parsed
as tags), and so do the characters with table or inline meaning (``|``, the backtick, the
backslash, ``[`` and ``]``: no cell becomes a code span or a link); line breaks become spaces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;", "`": "&#96;", "\\": "&#92;",
                          "[": "&#91;", "]": "&#93;", "\r": " ", "\n": " "})


def markdown_cell(value: object, *, digits: int = 3) -> str:
    """One table cell as Markdown text: floats rounded to ``digits`` (NaN and missing values blank), anything
    else as its escaped string."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value).translate(_ESCAPES)


def to_markdown(table: pd.DataFrame, *, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table of ``table``, header and cells through :func:`markdown_cell`."""
    def row(values: object) -> str:
        return "| " + " | ".join(markdown_cell(value, digits=digits) for value in values) + " |"

    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    return "\n".join([row(table.columns), rule, *(row(values) for values in table.itertuples(index=False))]) + "\n"
