"""Escaping for text shown as Markdown (Dagster UI metadata, report files).

Tag values and resource ids are untrusted: a ``|`` would break a table, ``<script>`` or a link
would be rendered. Everything that is not plain text is backslash-escaped or replaced.
"""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~=\"'])")


def md_text(value: object, limit: int = 120) -> str:
    text = "" if value is None else str(value)
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _SPECIAL.sub(r"\\\1", text)


def md_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
