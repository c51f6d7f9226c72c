"""Untrusted values (tags, usage labels, resource ids) on their way into files people open.

Each output has its own escaping: HTML text, JSON inside a ``<script>`` element, spreadsheet cells and
file names. Display text is also made inert as *text*: bidirectional overrides could make ``1,000``
read as ``000,1``, control characters could break a table, and a 10 kB value would swamp a page.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass

DISPLAY_LIMIT = 120
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_SAFE_STEM = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def display_text(value: object, limit: int = DISPLAY_LIMIT) -> str:
    """Printable text of bounded length: control and format characters (bidi overrides, zero-width
    joiners) become ``?``; longer values keep their start and end around an ellipsis."""
    if value is None:
        return ""
    text = "".join("?" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in str(value))
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return text[:head] + "…" + text[-(limit - head - 1) :]


def html_text(value: object, limit: int = DISPLAY_LIMIT) -> str:
    return html.escape(display_text(value, limit), quote=True)


def csv_cell(value: object, limit: int = 1000) -> str:
    """A spreadsheet cannot run it: a leading ``=``, ``+``, ``-`` or ``@`` gets a quote prefix (OWASP's
    CSV-injection rule); numbers are written by the caller as numbers, never through here."""
    text = display_text(value, limit)
    return "'" + text if text.startswith(_FORMULA_START) else text


@dataclass(frozen=True)
class JsonText:
    """JSON already written, e.g. by a Polars frame's ``write_json()``, placed in :func:`script_json`'s
    output as is: a year's dashboard rows serialized in Rust instead of as Python dicts (to_dicts and
    json.dumps were ~9 s of a year's five team pages)."""

    text: str


def script_json(data: object) -> str:
    """JSON that can sit inside ``<script>``: ``<``, ``>`` and ``&`` are written as unicode escapes, so
    no value can close the element (``</script>``) or open a comment, and JSON.parse reads it back.
    :class:`JsonText` values are spliced in before the escaping, so it covers them too."""
    spliced: dict[str, str] = {}

    def placeholder(value: object) -> str:
        if not isinstance(value, JsonText):
            return str(value)
        key = f"json-text-{uuid.uuid4().hex}"  # unguessable: no value of the data can equal it
        spliced[json.dumps(key)] = value.text
        return key

    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=placeholder)
    for key, raw in spliced.items():
        text = text.replace(key, raw, 1)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def file_stem(name: str) -> str:
    """A name used as a file name must already be a safe identifier (team registry names, pool names,
    months); anything else is refused rather than rewritten, so two values cannot collide."""
    if not isinstance(name, str) or not _SAFE_STEM.fullmatch(name):
        raise ValueError(f"refusing to use {display_text(name, 60)!r} as a file name")
    return name
