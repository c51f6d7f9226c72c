"""Content fingerprints of a day's cost lines, to re-run exactly the days a re-delivery changed.

The fingerprint ignores where lines came from (file names, synthetic line ids of FOCUS and GCP rows)
and their order, so a re-delivery with new file names but the same charges changes nothing, while a
single changed cent changes the day's fingerprint. Polars' row hash is stable within a Polars
version; after an upgrade, days may be re-run once, which is harmless.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

IGNORED = ["source_file", "line_item_id", "billing_period"]


def row_hashes(lines: pl.DataFrame) -> pl.Series:
    """A 64-bit hash of each line's content, ignoring where it came from."""
    entries = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))
    content = lines.drop([c for c in IGNORED if c in lines.columns]).with_columns(
        # maps hashed as delivered: tags re-delivered in another order only cost an extra re-run
        pl.col(c).cast(entries) for c, t in lines.schema.items() if isinstance(t, pl.Map)
    )
    return content.hash_rows(seed=1)


def day_fingerprint(lines: pl.DataFrame) -> str:
    if lines.is_empty():
        return "empty"
    hashes = np.sort(row_hashes(lines).to_numpy())
    return hashlib.sha256(hashes.tobytes()).hexdigest()[:20] + f"-{lines.height}"
