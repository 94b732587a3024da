"""The pieces a self-contained HTML page is made of: :func:`page`, :func:`section`,
:func:`table`, :func:`png` (a picture inlined as a data URL), with one stylesheet inside the
page. Nothing refers outside the file: it opens offline and can be mailed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

STYLE = """
body { font-family: sans-serif; margin: 24px auto; max-width: 1180px; color: #222;
       line-height: 1.4; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: 2px 10px; border-radius: 10px; color: white;
          font-weight: bold; }
.completed { background: #2e7d32; } .failed { background: #c62828; }
.interrupted { background: #ef6c00; } .running, .pending { background: #1565c0; }
.error { background: #fdecea; border-left: 4px solid #c62828; padding: 8px 12px;
         white-space: pre-wrap; font-family: monospace; font-size: 13px; }
.note { color: #555; font-size: 13px; }
.columns { display: flex; flex-wrap: wrap; gap: 16px; }
.column { border: 1px solid #e4e4e4; padding: 8px; border-radius: 4px; }
img.map { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def page(title: str, body: Iterable[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def section(heading: str, *parts: str, anchor: str = "") -> str:
    at = f' id="{escape(anchor)}"' if anchor else ""
    return f"<section{at}><h2>{escape(heading)}</h2>" + "".join(parts) + "</section>"


def para(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{escape(text)}</p>' if cls else f"<p>{escape(text)}</p>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table; numbers are right-aligned and formatted, None shows as a dash."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of names and values."""
    return "<table><tbody>" + "".join(f"<tr><th>{escape(k)}</th>{_cell(v)}</tr>"
                                      for k, v in rows) + "</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "<td>–</td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int | float):
        return f'<td class="num">{escape(number(value))}</td>'
    return f"<td>{escape(str(value))}</td>"


def number(value: float) -> str:
    """A number as people read it: thousands separated, about six significant digits."""
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "NaN"
    if value == 0 or 1e-3 <= abs(value) < 1e9:
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return f"{value:.4g}"


def png(data: bytes, alt: str, cls: str = "map") -> str:
    """A PNG inside the page, as a data URL."""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img class="{cls}" alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def status(text: str) -> str:
    return f'<span class="status {escape(text)}">{escape(text)}</span>'


def raw_error(text: str) -> str:
    return f'<div class="error">{escape(text)}</div>'


__all__ = ["escape", "number", "page", "pairs", "para", "png", "raw_error", "section", "status",
           "table"]
