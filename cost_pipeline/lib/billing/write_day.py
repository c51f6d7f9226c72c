"""Writing ``cost_lines`` days: the lines, their content hashes, sums and tag sets in one pass.

One pass writes one day, or several days that share billing files (a file per day through Polars'
partitioned sink, the sums and tag sets grouped by day as well; see :func:`write_cost_lines_days`).
A 10 M-line day is never held in memory: Polars streams the day's plan once and shares the scan
between the Parquet sink, the per-source totals (with the day's content fingerprint, see
``fingerprint.py``) that the asset reports and the bill reconciliation compares, the day's tag
sets, and each line's key hash (a line delivered twice is found from those after the pass). All are
sinks: when one of them was collected into memory instead, Polars 2.1 buffered the shared scan for
the slower consumer and a 13 M-line day peaked at 5.4 GiB instead of 1.4 GiB.

Tag sets: each line gets ``tag_set``, a 64-bit hash of its tags map (the same tags in another
order are the same tag set, see :func:`tag_set_hash`), and the lake's ``tag_sets`` table holds each
distinct map of the day once (as its first line delivered it); the lines themselves do not repeat the map. A day of
13 M lines has ~76,000 distinct maps: encoding 13 M maps was 5 s of a 13 s write (and 200 of 710 MB),
and attribution groups the day by ``tag_set`` and classifies the few maps instead of decoding 13 M
(``lib/attribution.py``). A reader wanting a line's tags joins ``tag_sets`` on (date, tag_set). A
second hash per map checks that no two different maps of the day share a ``tag_set``; if they ever
did, the day is written again with each line's map and no ``tag_sets``, and attribution reads the
maps themselves, so results stay exact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from cost_pipeline.config import BillingSource
from cost_pipeline.lib.billing.fingerprint import content_hash, fingerprint_parts, repeats, tag_set_hash
from cost_pipeline.lib.billing.schema import HASHES, MAP_ENTRIES
from cost_pipeline.lib.billing.sources import (
    LINE_KEY,
    NO_AMOUNT,
    HeldFile,
    explain_unreadable,
    refuse_bad_sums,
    refuse_repeated_keys,
    source_days,
    uses_content_ids,
)
from cost_pipeline.lib.lake import PARQUET, written_as_strings

# Null counts but no min/max statistics: a day's lines are in delivery order, so a row group's min and
# max of a string column span nearly every value and let no reader skip it (the day itself is the
# file's partition), while computing them took 12 % of a 10 M-line day's ingest (11.4 s -> 10.0 s wall,
# 20.8 -> 18.3 CPU-s, four interleaved pairs).
LINES_PARQUET = {**PARQUET, "statistics": {"min": False, "max": False, "distinct_count": False, "null_count": True}}

# Columns holding one value per billing file (a literal in its reader's plan), sunk as Categoricals
# under the schema of strings (:func:`lib.lake.written_as_strings`): the same file, and these four took
# 4.5 CPU-s of a 10 M-line sink as strings, 2.7-3.0 so.
PER_FILE = ["provider", "source", "billing_period", "source_file"]


def ingest_days(sources: list[BillingSource], days: list[dt.date], storage_for: Callable, paths: dict[dt.date, Path],
                held: Sequence[HeldFile] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ``cost_lines`` of ``days`` from every source, checked and written to ``paths`` in one pass
    (:func:`write_cost_lines_days`): a file that does not read, a line delivered twice, a line without
    an amount or an unknown currency fail after it, each error naming the file (the files are then
    validated one by one); the caller publishes ``paths`` only if none failed. Returns the per-day sums
    and tag sets. The pass also sinks each line's key hash: checking for lines delivered twice before
    it read every file once more (0.1-0.15 s of a 1.3 M-line day).

    Content ids (FOCUS, GCP, Azure: no line ids) are first left unnumbered, which spares a pass over
    every file; identical lines of a file then share a key, and only then is the pass run again with
    ids numbered (:func:`lib.billing.sources.lazy_content_ids`). ``held``: the files of ``days`` as the
    run listed them (:func:`lib.billing.sources.day_files`), so that each batch does not list the sources again."""
    sums, tag_sets, keys = _ingest_pass(sources, days, storage_for, paths, numbered=False, held=held)
    if repeats(keys):
        if any(uses_content_ids(s) for s in sources):
            sums, tag_sets, keys = _ingest_pass(sources, days, storage_for, paths, numbered=True, held=held)
        refuse_repeated_keys(keys, sources, days, storage_for)
    sums, tag_sets = sums.rename({"_day": "date"}), tag_sets.rename({"_day": "date"})
    for day in days:
        refuse_bad_sums(sums.filter(pl.col("date") == day), sources, day, storage_for)
    return sums, tag_sets


def _ingest_pass(sources: list[BillingSource], days: list[dt.date], storage_for: Callable, paths: dict[dt.date, Path],
                 numbered: bool, held: Sequence[HeldFile] | None) -> tuple[pl.DataFrame, pl.DataFrame, pl.Series]:
    maps: list[pl.DataFrame] = []  # the distinct maps of lines read without theirs (see source_days)
    checked = {"sums_checked": True, "keys_checked": True, "numbered": numbered, "held": held}
    plans = [source_days(s, days, storage_for(s), maps=maps, **checked) for s in sources]

    def with_maps() -> pl.LazyFrame:  # the day's lines with their maps, for a day whose maps share a hash
        return pl.concat([source_days(s, days, storage_for(s), **checked) for s in sources])

    try:
        return _write(pl.concat(plans).with_columns(_key=LINE_KEY), pl.col("date"), paths, None, maps, with_maps)
    except pl.exceptions.PolarsError:
        for day in days:
            explain_unreadable(sources, day, storage_for)
        raise


def write_cost_lines_day(plan: pl.LazyFrame, path: Path, tag_set: pl.Expr | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sink one day's ``plan`` to ``path`` with ``tag_set`` instead of ``tags``; returns the (source,
    billing period, currency) sums with their fingerprint parts (``fp_lines`` is the line count) and ``no_amount``
    (lines without an amount, for :func:`lib.billing.sources.refuse_bad_sums`), and the day's tag sets
    (``tag_set``, ``tags``). If two maps share a hash, the lines keep their maps and there are no tag
    sets. ``tag_set``: the hash (:func:`tag_set_hash` unless a test needs collisions)."""
    sums, tag_sets, _ = _write(plan, pl.lit(0, pl.Int32), {0: path}, tag_set)
    return sums.drop("_day"), tag_sets.drop("_day")


def write_cost_lines_days(plan: pl.LazyFrame, paths: dict[dt.date, Path], tag_set: pl.Expr | None = None,
                          maps: list[pl.DataFrame] | None = None, with_maps: Callable[[], pl.LazyFrame] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`write_cost_lines_day` of several days in one pass, each day's lines to ``paths[day]`` (a
    day without lines gets an empty file); the sums and tag sets have a ``date`` column. A plan with
    the tag-set hashes instead of the maps: see ``_write``'s ``maps`` and ``with_maps``.

    One pass, because billing files can hold many days: an export's month parts each hold lines of
    every day, and reading them once per day of a backfill read a 30-day month 30 times."""
    sums, tag_sets, _ = _write(plan, pl.col("date"), paths, tag_set, maps, with_maps)
    return sums.rename({"_day": "date"}), tag_sets.rename({"_day": "date"})


def _with_maps(tag_sets: pl.DataFrame, maps: list[pl.DataFrame]) -> pl.DataFrame:
    """The pass's tag sets with the maps its plan left null filled from the readers' distinct maps (a
    file's first line of each tag set; the first file's, as the pass keeps the first line)."""
    if not maps:
        return tag_sets
    known = pl.concat(maps).unique(["tag_set", "check"], keep="first", maintain_order=True).rename({"tags": "_known"})
    filled = tag_sets.join(known, on=["tag_set", "check"], how="left", maintain_order="left")
    return filled.with_columns(tags=pl.coalesce("tags", "_known")).drop("_known")


def _copied(column: str) -> pl.Expr:
    """A map column whose strings are copied out of the buffers they were read or computed in. The
    tag-set sink keeps each distinct map until the pass ends, and a kept map's strings held their
    whole batch's buffers alive: a 10 M-line legacy CUR day (its maps computed from tag columns) peaked
    at 1.78 GiB, 0.86 GiB with the kept maps copied."""
    entry = pl.element().struct
    copied = pl.struct(key=pl.concat_str(entry.field("key"), pl.lit("")), value=pl.concat_str(entry.field("value"), pl.lit("")))
    return pl.col(column).cast(MAP_ENTRIES).list.eval(copied).cast(MAP_ENTRIES).cast(pl.Map(pl.String, pl.String))


def _derived(plan: pl.LazyFrame, day: pl.Expr, tag_set: pl.Expr | None) -> pl.LazyFrame:
    """``plan`` with every derived column computed once, in the plan all the pass's queries share: the
    day, the tag-set hashes (unless the plan has them) and the content hash."""
    schema = plan.collect_schema()
    content = pl.Schema({c: t for c, t in schema.items() if c != "_key"})  # not part of a line's content
    if HASHES[0] not in schema:
        plan = plan.with_columns((tag_set if tag_set is not None else tag_set_hash()).alias("tag_set"), tag_set_hash(seed=2).alias("_check"))
    return plan.with_columns(_day=day, _h=content_hash(content, tag_set=pl.col("tag_set")))


def _write(plan: pl.LazyFrame, day: pl.Expr, paths: dict, tag_set: pl.Expr | None, maps: list[pl.DataFrame] | None = None,
           with_maps: Callable[[], pl.LazyFrame] | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.Series]:
    """The pass: lines split into ``paths`` by ``day`` (``_day`` in the results); a ``_key`` column of
    the plan is sunk apart and returned (an empty series without it). ``maps``: the distinct maps of
    lines whose ``tags`` the plan left null; ``with_maps``: the plan with every line's map, for a day
    whose maps share a hash (default: ``plan``)."""
    schema = plan.collect_schema()
    keyed = "_key" in schema
    lines = _derived(plan, day, tag_set)
    first = next(iter(paths.values()))
    work = {name: first.with_suffix(f".{name}.parquet") for name in ("sums", "tag_sets", "keys")}
    written: list = []

    def day_file(args) -> Path:  # exactly one file per day: the lake's layout
        key = args.partition_keys["_day"][0]
        if args.index_in_partition or key not in paths:
            raise ValueError(f"a second file for {key!r}, or a day outside {sorted(paths)}")
        written.append(key)
        return paths[key]

    by_day = len(paths) > 1  # one day: a plain sink and no per-day keys (what a 13 M-line day is timed with)
    keys = ["_day"] if by_day else []
    first_of_pair = pl.col("tag_set") ^ pl.col("check")
    if by_day:
        target = pl.PartitionBy(first.parent, key="_day", include_key=False, file_path_provider=day_file, approximate_bytes_per_file=None)
        first_of_pair = pl.struct("_day", first_of_pair)
    else:
        target, written = first, list(paths)
    written_lines, metadata = written_as_strings(lines.drop("_h", "_check", "tags", *([] if by_day else ["_day"]), *(["_key"] if keyed else [])),
                                                 PER_FILE, key="_day" if by_day else None)
    try:
        pl.collect_all([
            written_lines.sink_parquet(target, lazy=True, metadata=metadata, **LINES_PARQUET),
            # per billing period too, for the reconciliation's totals (plans of tests may have none)
            lines.group_by(*keys, "source", *(["billing_period"] if "billing_period" in schema else []), "currency")
            .agg(pl.col("billed_cost").sum(), pl.col("effective_cost").sum(), pl.col("is_final").sum().alias("final"),
                 NO_AMOUNT.sum().alias("no_amount"), *fingerprint_parts(pl.col("_h")))
            .sink_parquet(work["sums"], lazy=True),
            # the first line of each (day, tag_set, check) (a group-by keeping maps peaked at 7.8 GiB), keyed by
            # the pair's xor: cheaper than a struct of the pair, and if two pairs ever shared it, one map would be
            # missing and attribution would read the maps (never a wrong one)
            lines.select(*keys, "tag_set", "tags", pl.col("_check").alias("check")).filter(first_of_pair.is_first_distinct())
            .with_columns(_copied("tags")).sink_parquet(work["tag_sets"], lazy=True),
            *([lines.select("_key").sink_parquet(work["keys"], lazy=True, compression="uncompressed")] if keyed else []),
        ], engine="streaming")
        lines = lines.drop("_key", strict=False)
        for key in set(paths) - set(written):  # a day without lines still has its (empty) file
            lines.drop("_h", "_check", "tags", "_day").clear().collect().write_parquet(paths[key], **LINES_PARQUET)
        tag_sets = _with_maps(pl.read_parquet(work["tag_sets"]), maps or []).drop("check")
        sums = pl.read_parquet(work["sums"])
        if not by_day:
            tag_sets, sums = (frame.with_columns(_day=pl.lit(next(iter(paths)))) for frame in (tag_sets, sums))
        shared = tag_sets.filter(pl.struct("_day", "tag_set").is_duplicated())["_day"].unique().to_list()
        full = _derived(with_maps().drop("_key", strict=False), day, tag_set) if shared and with_maps else lines
        for key in shared:  # a shared hash: that day's lines keep their maps (a second pass) and it has no tag sets
            full.filter(pl.col("_day") == key).drop("_h", "_check", "_day").sink_parquet(paths[key], engine="streaming", **LINES_PARQUET)
        keys = pl.read_parquet(work["keys"])["_key"] if keyed else pl.Series("_key", [], pl.UInt64)
        return sums, tag_sets.filter(~pl.col("_day").is_in(shared)).sort("_day", "tag_set"), keys
    finally:
        for file in work.values():
            file.unlink(missing_ok=True)
