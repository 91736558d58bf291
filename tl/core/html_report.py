"""A report as sections of text, tables and figures, rendered to one self-contained HTML page.

The page has inline CSS, PNGs embedded as base64 data URIs and no scripts, so it reads offline and
can be mailed as one file. ``analysis.report`` renders the search's report with it and
``tl.use.evaluate`` the external-validation page, so both read alike. Tables arrive as text (each
caller formats its numbers); a cell that reads as a number is right-aligned. Pure Python and pandas.
"""
from __future__ import annotations

import base64
import html
import re
from typing import Mapping, NamedTuple

import pandas as pd


class Section(NamedTuple):
    """One report section: paragraphs, (caption, text table) pairs and figure names."""

    title: str
    paragraphs: list[str]
    tables: list[tuple[str, pd.DataFrame]]
    figures: list[str]


# A formatted number ("0.912", "+0.150 [+0.100, +0.200]", "11,000,000", "1.2e-09", "4/10", "-").
_NUMBER = re.compile(r"^(-|[+-]?[\d,]*\.?\d+(e[+-]?\d+)?(/\d+)?( \[.*\])?)$")
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1.5em; max-width: 1400px;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
p { overflow-wrap: anywhere; max-width: 110ch; }
#recommended-model p.warning { color: #8a4b00; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; }
"""


def html_table(frame: pd.DataFrame) -> str:
    """Return ``frame`` (already text) as an escaped HTML table, numeric cells right-aligned."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = "".join(f'<td class="num">{html.escape(str(v))}</td>' if _NUMBER.match(str(v))
                        else f"<td>{html.escape(str(v))}</td>" for v in row)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def section_id(title: str) -> str:
    """The HTML id of a section: its title in lower case, words joined by hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_html(sections: list[Section], images: Mapping[str, bytes], title: str,
                captions: Mapping[str, str] | None = None) -> str:
    """Return the report as one self-contained HTML page.

    Args:
        images: figure name -> PNG bytes; a section's figure without bytes is left out.
        captions: figure name -> caption (also the image's alt text); default: the name.
    """
    captions = captions or {}
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f'<section id="{section_id(section.title)}"><h2>{html.escape(section.title)}</h2>')
        parts += [f'<p class="warning">{html.escape(p)}</p>' if p.startswith("Warning:") else f"<p>{html.escape(p)}</p>"
                  for p in section.paragraphs]
        for caption, table in section.tables:
            if caption:
                parts.append(f"<h3>{html.escape(caption)}</h3>")
            parts.append(f'<div class="scroll">{html_table(table)}</div>')
        for name in (f for f in section.figures if f in images):
            data = base64.b64encode(images[name]).decode("ascii")
            caption = html.escape(captions.get(name, name))
            parts.append(f'<figure><img src="data:image/png;base64,{data}" '
                         f'alt="{caption}"><figcaption>{caption}</figcaption></figure>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
