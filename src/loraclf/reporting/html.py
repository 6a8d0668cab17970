"""The building blocks of loraclf's HTML pages: style, escaping, tables, embedded figures, atomic writes.

The run report (:mod:`loraclf.reporting.report`), its calibration section and the ``loraclf shift`` page share them.
Pages are self-contained: inline CSS, PNG figures embedded as base64 ``data:`` URIs, no scripts, fonts or links, so
a page opens offline and can be mailed as one file. Every text that comes from a file goes through :func:`esc`.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from loraclf.utils.errors import UserError
from loraclf.utils.files import atomic_write_bytes

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:1.5em;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.25em .8em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f5f5f5}
.summary td{text-align:left}
.summary th{text-align:left;white-space:nowrap;vertical-align:top;background:none;font-weight:600;color:#555}
figure{margin:.8em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{color:#666;font-size:.9em}.warn{color:#a33}.over{color:#a33;font-weight:600}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def pct(x) -> str:
    """A fraction as a percentage with two decimals; "–" for None."""
    return "–" if x is None else f"{x * 100:.2f}%"


def table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}"><figcaption>{esc(caption)}</figcaption></figure>'


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


def page(title: str, sections: list[str]) -> str:
    """A whole page: title, inline style, the sections in order."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f"<body><h1>{esc(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def atomic_write(path: Path, data: bytes, flag: str = "RUN") -> None:
    """A unique temporary sibling, then os.replace: a reader never sees half a file, two writers never share a
    temporary file, and an interrupted write leaves the old one.

    Raises:
        UserError: the folder is not writable (names ``flag`` and the path).
    """
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise UserError(f"{flag}: cannot write '{path}' ({exc.strerror}); make the folder writable") from None
