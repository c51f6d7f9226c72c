"""Tag key folding: one rule for every provider's spelling of a key, used by the schema and the config."""

from __future__ import annotations

import re

_PREFIXES = ("resourcetags/user:", "resource_tags_user_", "resourcetags/", "tags/", "user:", "user_")


def fold_key(raw: str) -> str:
    """Fold a provider's tag key to the schema's form: lower case, prefix dropped, ``_``/``:`` → ``-``."""
    key = raw.strip().lower()
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    return re.sub(r"[_:\s]+", "-", key)
