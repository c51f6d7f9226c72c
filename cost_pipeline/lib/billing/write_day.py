"""Writing one day of ``cost_lines``: the lines, their content hashes, sums and tag sets in one pass.

A 10 M-line day is never held in memory: Polars streams the day's plan once and shares the scan
between the Parquet sink, the per-source totals (with the day's content fingerprint, see
``fingerprint.py``) that the asset reports and the bill reconciliation compares, and the day's tag
sets. All are sinks: when one of them was collected into memory instead, Polars 2.1 buffered the
shared scan for the slower consumer and a 13 M-line day peaked at 5.4 GiB instead of 1.4 GiB.

Tag sets: each line gets ``tag_set``, a 64-bit hash of its tags map, and the lake's ``tag_sets``
table holds each distinct map of the day once; the lines themselves do not repeat the map. A day of
13 M lines has ~76,000 distinct maps: encoding 13 M maps was 5 s of a 13 s write (and 200 of 710 MB),
and attribution groups the day by ``tag_set`` and classifies the few maps instead of decoding 13 M
(``lib/attribution.py``). A reader wanting a line's tags joins ``tag_sets`` on (date, tag_set). A
second hash per map checks that no two different maps of the day share a ``tag_set``; if they ever
did, the day is written again with each line's map and no ``tag_sets``, and attribution reads the
maps themselves, so results stay exact.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cost_pipeline.lib.billing.fingerprint import content_hash, fingerprint_parts, tag_set_hash
from cost_pipeline.lib.billing.sources import NO_AMOUNT
from cost_pipeline.lib.lake import PARQUET


def write_cost_lines_day(plan: pl.LazyFrame, path: Path, tag_set: pl.Expr | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sink ``plan`` to ``path`` with ``tag_set`` instead of ``tags``; returns the (source, currency)
    sums with their fingerprint parts (``fp_lines`` is the line count) and ``no_amount`` (lines
    without an amount, for :func:`lib.billing.sources.refuse_bad_sums`), and the day's tag sets
    (``tag_set``, ``tags``). If two maps share a hash, the lines keep their maps and there are no tag
    sets. ``tag_set``: the hash (:func:`tag_set_hash` unless a test needs collisions)."""
    schema = plan.collect_schema()
    # every derived column computed once, in the plan all three queries share
    lines = plan.with_columns(tag_set=tag_set if tag_set is not None else tag_set_hash()).with_columns(
        _h=content_hash(schema, tag_set=pl.col("tag_set")), _check=tag_set_hash(seed=2))
    work = {name: path.with_suffix(f".{name}.parquet") for name in ("sums", "tag_sets")}
    try:
        pl.collect_all([
            lines.drop("_h", "_check", "tags").sink_parquet(path, lazy=True, **PARQUET),
            lines.group_by("source", "currency").agg(pl.col("billed_cost").sum(), pl.col("effective_cost").sum(),
                                                     pl.col("is_final").sum().alias("final"), NO_AMOUNT.sum().alias("no_amount"),
                                                     *fingerprint_parts(pl.col("_h")))
            .sink_parquet(work["sums"], lazy=True),
            # the first line of each (tag_set, check) pair (a group-by keeping maps peaked at 7.8 GiB), keyed by
            # their xor: cheaper than a struct, and if two pairs ever shared it, one map would be missing and
            # attribution would read the maps (never a wrong one)
            lines.select("tag_set", "tags", pl.col("_check").alias("check")).filter((pl.col("tag_set") ^ pl.col("check")).is_first_distinct())
            .sink_parquet(work["tag_sets"], lazy=True),
        ], engine="streaming")
        tag_sets = pl.read_parquet(work["tag_sets"]).drop("check")
        if tag_sets["tag_set"].is_duplicated().any():  # a shared hash: the maps stay on the lines (a second pass)
            lines.drop("_h", "_check").sink_parquet(path, engine="streaming", **PARQUET)
            tag_sets = tag_sets.clear()
        return pl.read_parquet(work["sums"]), tag_sets.sort("tag_set")
    finally:
        for file in work.values():
            file.unlink(missing_ok=True)
