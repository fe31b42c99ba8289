"""The report page: one static HTML document listing every figure, table and fit.

The page uses no script, no web font and no remote resource; images are referenced by
paths relative to the page, so the whole figures folder can be copied or zipped and opened
anywhere. Everything user-supplied is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; border-bottom: 1px solid #ccc; margin-top: 2.5rem; }
h3 { font-size: 1.05rem; margin-top: 1.5rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; }
table { border-collapse: collapse; font-size: 0.8rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; } th { background: #f4f4f4; }
pre { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; font-size: 0.75rem; }
.table-wrap { overflow-x: auto; max-width: 100%; }
nav a { margin-right: 0.8rem; } .links a { margin-right: 0.6rem; font-size: 0.8rem; }
"""


@dataclass(frozen=True)
class PageFigure:
    """A figure on the page: ``path`` (relative to the page) of the PNG shown, plus other formats."""

    title: str
    path: str
    caption: str = ""
    downloads: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PageTable:
    """A table on the page, with links to its files (Parquet, Markdown) relative to the page."""

    title: str
    table: pd.DataFrame
    downloads: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PageSection:
    """One block of the page: a fit, a comparison or the overview.

    Attributes:
        anchor: HTML id (letters, digits, dashes).
        title: heading.
        text: a paragraph of plain text.
        figures, tables: content.
        metrics: summary numbers shown as a table.
        provenance: what produced it (config, environment...), shown folded as JSON.
        reproduce: shell commands that reproduce it.
        links: label -> path (relative to the page) of related pages, e.g. the interactive viewer.
    """

    anchor: str
    title: str
    text: str = ""
    figures: Sequence[PageFigure] = ()
    tables: Sequence[PageTable] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    reproduce: Sequence[str] = ()
    links: dict[str, str] = field(default_factory=dict)


def render_page(sections: Sequence[PageSection], *, title: str, intro: str = "") -> str:
    """The complete HTML document (a string) with a navigation bar over ``sections``."""
    escape = html.escape
    nav = " ".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in sections)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<link rel="icon" href="data:,">', f"<title>{escape(title)}</title>", f"<style>{_STYLE}</style>",
             "</head><body>", f"<h1>{escape(title)}</h1>"]
    if intro:
        parts.append(f"<p>{escape(intro)}</p>")
    parts.append(f"<nav>{nav}</nav>")
    parts.extend(_render_section(section) for section in sections)
    parts.append("</body></html>")
    return "\n".join(parts)


def _render_section(section: PageSection) -> str:
    escape = html.escape
    out = [f'<section id="{escape(section.anchor)}"><h2>{escape(section.title)}</h2>']
    if section.links:
        out.append(f"<p>{_links(section.links)}</p>")
    if section.text:
        out.append(f"<p>{escape(section.text)}</p>")
    if section.metrics:
        metrics = pd.DataFrame({"metric": list(section.metrics), "value": [_plain(v) for v in section.metrics.values()]})
        out.append(_table_html(metrics))
    for table in section.tables:
        out.append(f"<h3>{escape(table.title)}</h3>{_links(table.downloads)}{_table_html(table.table)}")
    for figure in section.figures:
        caption = escape(figure.title) + (f": {escape(figure.caption)}" if figure.caption else "")
        out.append(f'<figure><img src="{escape(figure.path, quote=True)}" alt="{escape(figure.title, quote=True)}" '
                   f'loading="eager"><figcaption>{caption} {_links(figure.downloads)}</figcaption></figure>')
    if section.reproduce:
        out.append("<h3>Reproduce</h3><pre>" + escape("\n".join(section.reproduce)) + "</pre>")
    if section.provenance:
        dump = json.dumps(section.provenance, indent=2, default=str, sort_keys=True)
        out.append(f"<details><summary>Provenance</summary><pre>{escape(dump)}</pre></details>")
    out.append("</section>")
    return "\n".join(out)


def _links(downloads: dict[str, str]) -> str:
    if not downloads:
        return ""
    items = " ".join(f'<a href="{html.escape(path, quote=True)}">{html.escape(label)}</a>'
                     for label, path in downloads.items())
    return f'<span class="links">{items}</span>'


def _table_html(table: pd.DataFrame) -> str:
    body = table.to_html(index=False, float_format=lambda value: f"{value:.3f}", na_rep="", border=0, escape=True)
    return f'<div class="table-wrap">{body}</div>'


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)
