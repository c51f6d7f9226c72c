"""Content fingerprints of a day's cost lines, to re-run exactly the days a re-delivery changed.

The fingerprint ignores where lines came from (file names, synthetic line ids of FOCUS and GCP rows)
and their order, so a re-delivery with new file names but the same charges changes nothing, while a
single changed cent changes the day's fingerprint. It is a multiset hash of the lines' 64-bit
content hashes: their count, the sums of their low and high 32 bits and their xor, aggregates a
streaming pass computes without keeping or sorting 13 M hashes. Polars' row hash is stable within a
Polars version; after an upgrade (or a change of this scheme), days may be re-run once, which is harmless.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from cost_pipeline.lib.billing.schema import HASHES, MAP_ENTRIES
from cost_pipeline.lib.lake import written_as_strings

IGNORED = ["source_file", "line_item_id", "billing_period"]


# added to a map's sum, and a null map's hash, per seed: an empty and a missing map are two tag sets, and
# neither has the same hash under two seeds (the ingest keys each tag set by its two hashes' xor)
EMPTY_MAP, NULL_MAP = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F


def tag_set_hash(seed: int = 1) -> pl.Expr:
    """A 64-bit hash of a line's tags map (a line's ``tag_set``, see ``lib/billing/write_day.py``): the
    sum of its entries' hashes, so the same tags in another order are the same tag set.

    Each entry's key and value are hashed as strings and their xor hashed again (summed as plain xors,
    two entries trading their values would collide about once in 2^32, not 2^64). Polars hashing the
    map as a list of structs took 2.5 times as long (0.13 instead of 0.05 s for 1 M lines' maps; a
    10 M-line day's ingest ~9 % more CPU). Like every Polars hash, it rules out accidental collisions
    (with the second hash the ingest checks), not maps crafted against its fixed seeds."""
    entry = pl.element().struct.field("key").hash(seed=seed) ^ pl.element().struct.field("value").hash(seed=seed + 10)
    summed = pl.col("tags").cast(MAP_ENTRIES).list.eval(entry.hash(seed=seed + 20)).list.sum() + (seed * EMPTY_MAP) % 2**64
    return summed.fill_null((seed * NULL_MAP) % 2**64)


def content_hash(schema: pl.Schema, tag_set: pl.Expr | None = None) -> pl.Expr:
    """A 64-bit hash of each line's content, ignoring where it came from (a lazy expression, so a
    day of tens of millions of lines is hashed while streaming). ``tag_set``: the lines'
    :func:`tag_set_hash`, when already computed; lines carrying their tag-set hashes beside their maps
    (:data:`HASHES`; a reader that hashed the maps from the file left the maps null) are hashed by those, the same numbers,
    so a line's content hash does not depend on how it was read."""
    if "tags" in schema and HASHES[0] in schema:
        tag_set = tag_set if tag_set is not None else pl.col(HASHES[0])
        schema = pl.Schema({c: t for c, t in schema.items() if c not in HASHES})
    hashes = [
        # the tags map by its tag set: the same tags re-delivered in another order change nothing
        (tag_set if tag_set is not None else tag_set_hash()) if c == "tags" else (pl.col(c).cast(MAP_ENTRIES) if isinstance(t, pl.Map) else pl.col(c)).hash(seed=i + 1)
        for i, (c, t) in enumerate((c, t) for c, t in schema.items() if c not in IGNORED)
    ]
    # each column hashed alone with its position as seed, combined: a third of the time of hashing
    # them as one struct (1.5 s instead of 4 s for the plain columns of 13 M lines)
    return functools.reduce(operator.xor, hashes)


def row_hashes(lines: pl.DataFrame) -> pl.Series:
    return lines.select(content_hash(lines.schema)).to_series()


def fingerprint_parts(h: pl.Expr) -> list[pl.Expr]:
    """Aggregates of line hashes ``h`` from which :func:`fingerprint_from` builds the fingerprint; they
    add up across groups (e.g. per currency), so any grouping of the same lines gives the same result."""
    return [pl.len().alias("fp_lines"), (h & 0xFFFFFFFF).sum().alias("fp_lo"), (h // 2**32).sum().alias("fp_hi"), h.bitwise_xor().alias("fp_xor")]


def fingerprint_from(parts: pl.DataFrame) -> str:
    """The fingerprint of the lines summed in ``parts`` (rows of :func:`fingerprint_parts`)."""
    lines = sum(int(v) for v in parts["fp_lines"])
    if not lines:
        return "empty"
    lo, hi = sum(int(v) for v in parts["fp_lo"]), sum(int(v) for v in parts["fp_hi"])
    xor = functools.reduce(operator.xor, (int(v) for v in parts["fp_xor"]), 0)
    return hashlib.sha256(f"{lo}:{hi}:{xor}".encode()).hexdigest()[:20] + f"-{lines}"


def day_fingerprint(lines: pl.DataFrame | pl.LazyFrame) -> str:
    lazy = lines.lazy()
    return fingerprint_from(lazy.select(fingerprint_parts(content_hash(lazy.collect_schema()))).collect(engine="streaming"))


def sink_fingerprinted(lines: pl.LazyFrame, path: Path, per_file: Sequence[str] = (), **parquet) -> str:
    """``lines`` sunk to ``path`` and their :func:`day_fingerprint`, from one pass over them: reading
    the written day back for it took 0.8 s more of a usage day's 23 M samples (20,000 pods).
    ``per_file``: columns holding one value per staged file, written as :func:`lib.lake.written_as_strings`."""
    parts = path.with_name(f"{path.name}.fingerprint")
    written, metadata = written_as_strings(lines, list(per_file))
    try:
        pl.collect_all([written.sink_parquet(path, lazy=True, metadata=metadata, **parquet),
                        lines.select(fingerprint_parts(content_hash(lines.collect_schema()))).sink_parquet(parts, lazy=True)], engine="streaming")
        return fingerprint_from(pl.read_parquet(parts))
    finally:
        parts.unlink(missing_ok=True)


def repeats(hashes: pl.Series) -> bool:
    """Whether any of ``hashes`` (64-bit hashes of lines or their keys) occurs twice."""
    hashes = hashes.sort()  # sorted, a repeat is its neighbour: 0.3 s for 13 M (is_duplicated: 2.7 s)
    return bool((hashes == hashes.shift(1)).any())
