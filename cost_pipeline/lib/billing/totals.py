"""Reconciliation against the delivered bill: the lake's cost lines versus ``bill_totals``.

``bill_totals`` holds, per source, billing period, usage day and currency, the line count and the
billed and effective cost of the current delivery, summed from the delivered files. For every day
the lake holds, ``cost_lines`` of that source and period must match it exactly (Decimal, all 12
places). Days the lake does not hold yet are *pending*; lines dated before the first partition can
never land and are reported as *unlandable* (move ``partitions_start_date`` earlier).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from cost_pipeline.lib.markdown import md_table
from cost_pipeline.lib.money import MONEY

KEY = ["source", "billing_period", "date", "currency"]
AMOUNTS = ["lines", "billed_cost", "effective_cost"]
_TOTALS_INPUT = {"source": pl.String(), "billing_period": pl.String(), "date": pl.Date(), "currency": pl.String(),
                 "billed_cost": MONEY, "effective_cost": MONEY, "is_final": pl.Boolean()}


def lake_totals(cost_lines: pl.LazyFrame) -> pl.DataFrame:
    """The lake's side of :func:`reconcile_to_bill`, with ``is_final`` (every line of the key final)."""
    return (
        cost_lines.group_by(KEY)
        .agg(pl.len().cast(pl.Int64).alias("lines"), pl.col("billed_cost").sum(), pl.col("effective_cost").sum(), pl.col("is_final").all())
        .collect(engine="streaming")
    )


TOTALS_CACHE = "cost_line_totals"  # lake_totals per day with the version of the day's file they were read from
# daily: each day's totals as the ingest summed them while writing the day, with the version of the file it
# wrote (one small file per day: runs of other days, side by side, never write the same file)
DAY_TOTALS = "cost_line_day_totals"


def totals_of_sums(sums: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """:func:`lake_totals` of a day from the ingest's sums of the lines it wrote (per source, billing
    period and currency, with ``fp_lines`` and ``final`` line counts); a day without lines gets a row
    without a source, as :func:`held_totals` caches it."""
    schema = lake_totals(pl.LazyFrame(schema=_TOTALS_INPUT)).schema
    rows = (
        sums.filter(pl.col("date") == day).group_by(KEY)
        .agg(pl.col("fp_lines").sum().alias("lines"), pl.col("billed_cost").sum(), pl.col("effective_cost").sum(),
             (pl.col("final").sum() == pl.col("fp_lines").sum()).alias("is_final"))
    )
    return rows.cast(dict(schema)).select(list(schema)) if rows.height else pl.DataFrame({"date": [day]}, schema=schema)


def record_day_totals(lake, sums: pl.DataFrame, days: list[dt.date]) -> None:
    """Keep each of ``days``' totals (:func:`totals_of_sums`) beside the version of the ``cost_lines``
    file just written for it, so that :func:`held_totals` need not read a new day's lines again: after
    a year's backfill the reports' first run read 365 M lines for it (~40 s of a 17-minute backfill).
    Call it after the days are committed; a day whose file is replaced later has another version, and
    its lines are read again."""
    versions = lake.day_versions("cost_lines")
    for day in days:
        if day in versions:
            lake.write_day(DAY_TOTALS, day, totals_of_sums(sums, day).with_columns(version=pl.lit(versions[day])))


def recorded_day_totals(lake, day: dt.date) -> pl.DataFrame | None:
    """:func:`lake_totals` of ``day`` as the ingest recorded them, if the day's ``cost_lines`` file is still
    the one it wrote (None: not recorded, unreadable, or the file was replaced since); a day without
    lines has no rows."""
    version = lake.day_version("cost_lines", day)
    if version is None or not lake.has_day(DAY_TOTALS, day):
        return None
    try:
        recorded = lake.scan_days(DAY_TOTALS, [day]).collect()
    except (OSError, pl.exceptions.PolarsError):  # unreadable: the lines are read instead
        return None
    if "version" not in recorded.columns or not recorded.height or (recorded["version"] != version).any():
        return None
    return recorded.filter(pl.col("source").is_not_null()).drop("version")


def _recorded(lake, days: list[dt.date], current: pl.DataFrame) -> pl.DataFrame | None:
    """The totals the ingest recorded for ``days`` whose file is still the one it wrote (None: none)."""
    have = sorted(set(days) & set(lake.day_versions(DAY_TOTALS)))
    if not have:
        return None
    try:
        recorded = lake.scan_days(DAY_TOTALS, have).collect()
    except (OSError, pl.exceptions.PolarsError):  # unreadable: the lines are read instead
        return None
    return recorded.join(current, on=["date", "version"], how="semi") if "version" in recorded.columns else None


def held_totals(lake) -> pl.DataFrame:
    """:func:`lake_totals` of every day the lake's ``cost_lines`` holds, re-reading only the days whose
    file changed (or is new) since their totals were cached in the lake's ``cost_line_totals`` table.

    Both the bill reconciliation and the summary read every day's lines; at a year of 1 M-line days
    that was ~25 s each, in every run. A day's file replaced in any way (a re-run, a restatement, a
    file edited or restored by hand) gets a new version, so its lines are read again: the totals are
    always those of the files readers see."""
    versions = lake.day_versions("cost_lines")
    try:
        cached = lake.read_table(TOTALS_CACHE)
    except (OSError, pl.exceptions.PolarsError):  # unreadable: computed again and replaced
        cached = None
    current = pl.DataFrame({"date": list(versions), "version": list(versions.values())}, schema={"date": pl.Date(), "version": pl.String()})
    usable = cached is not None and "version" in cached.columns
    kept = cached.join(current, on=["date", "version"], how="semi") if usable else None
    stale = sorted(set(versions) - (set(kept["date"].to_list()) if kept is not None else set()))
    parts = [kept] if kept is not None else []
    recorded = _recorded(lake, stale, current) if stale else None
    if recorded is not None and recorded.height:
        parts.append(recorded)
        stale = sorted(set(stale) - set(recorded["date"].to_list()))
    if stale:
        read = lake_totals(lake.scan_days("cost_lines", stale))
        # a day without lines keeps a row without a source, so it is not read again either
        empty = pl.DataFrame({"date": sorted(set(stale) - set(read["date"].to_list()))}, schema={"date": pl.Date()})
        parts.append(pl.concat([read, empty], how="diagonal_relaxed").join(current, on="date"))
    if not parts:
        return lake_totals(pl.LazyFrame(schema=_TOTALS_INPUT))
    table = pl.concat(parts, how="diagonal_relaxed")
    if stale or recorded is not None or not usable or kept.height != cached.height:
        lake.write_table(TOTALS_CACHE, table.sort("date", "source", "billing_period", "currency", nulls_last=True))
    return table.filter(pl.col("source").is_not_null()).drop("version")


def reconcile_to_bill(
    bill: pl.DataFrame, lake: pl.DataFrame, lake_days: set[dt.date], first_day: dt.date, sources: list[str]
) -> pl.DataFrame:
    """Per source, period and currency: bill and lake totals over the days the lake holds, and a status.

    ``sources``: the sources reconciled from delivered files (``bq://`` tables are read by day and
    have no bill totals yet; their lake lines are left out rather than reported as off).

    status: ``ok``; ``off`` (a materialized day differs: a line lost, doubled or changed);
    ``pending`` (matches so far, some of the delivery's days are not materialized yet);
    ``unlandable`` (lines dated before the first partition).
    """
    zero = pl.lit(0).cast(MONEY)
    days = pl.Series("date", sorted(lake_days), dtype=pl.Date)
    joined = (
        bill.select(KEY + AMOUNTS).join(lake.filter(pl.col("source").is_in(sources)).select(KEY + AMOUNTS), on=KEY, how="full", coalesce=True, suffix="_lake")
        .with_columns(
            pl.col("lines", "lines_lake").fill_null(0),
            pl.col("billed_cost", "effective_cost", "billed_cost_lake", "effective_cost_lake").fill_null(zero),
            held=pl.col("date").is_in(days.implode()),
            early=pl.col("date") < first_day,
        )
    )
    differs = (
        (pl.col("lines") != pl.col("lines_lake"))
        | (pl.col("billed_cost") != pl.col("billed_cost_lake"))
        | (pl.col("effective_cost") != pl.col("effective_cost_lake"))
    )
    return (
        joined.group_by("source", "billing_period", "currency")
        .agg(
            pl.col("lines").sum().alias("bill_lines"),
            pl.col("effective_cost").sum().alias("bill_effective"),
            pl.col("billed_cost").sum().alias("bill_billed"),
            pl.col("lines").filter(pl.col("held")).sum().alias("held_bill_lines"),
            pl.col("lines_lake").sum().alias("lake_lines"),
            pl.col("effective_cost").filter(pl.col("held")).sum().alias("held_bill_effective"),
            pl.col("effective_cost_lake").sum().alias("lake_effective"),
            pl.col("billed_cost").filter(pl.col("held")).sum().alias("held_bill_billed"),
            pl.col("billed_cost_lake").sum().alias("lake_billed"),
            (pl.col("held") & differs).any().alias("off"),
            pl.col("date").filter(pl.col("held") & differs).min().alias("first_off_day"),
            (~pl.col("held") & ~pl.col("early")).sum().alias("pending_days"),
            pl.col("lines").filter(pl.col("early")).sum().alias("unlandable_lines"),
        )
        .with_columns(
            pl.col("held_bill_effective", "lake_effective", "held_bill_billed", "lake_billed").fill_null(zero),
            difference=pl.col("lake_effective").fill_null(zero) - pl.col("held_bill_effective").fill_null(zero),
            status=pl.when(pl.col("off")).then(pl.lit("off"))
            .when(pl.col("unlandable_lines") > 0).then(pl.lit("unlandable"))
            .when(pl.col("pending_days") > 0).then(pl.lit("pending"))
            .otherwise(pl.lit("ok")),
        )
        .drop("off")
        .sort("source", "billing_period", "currency")
    ).pipe(lambda frame: frame.filter(~((pl.col("held_bill_lines") == 0) & (pl.col("lake_lines") == 0) & (pl.col("status") == "pending"))))


def totals_markdown(totals: pl.DataFrame) -> str:
    per_period = (
        totals.group_by("source", "billing_period", "currency")
        .agg(pl.col("lines").sum(), pl.col("billed_cost").sum(), pl.col("effective_cost").sum(),
             pl.col("date").min().alias("first_day"), pl.col("date").max().alias("last_day"), pl.col("delivery_id").first())
        .sort("source", "billing_period", "currency")
    )
    return md_table(
        ["source", "period", "currency", "lines", "billed", "effective", "usage days", "delivery"],
        [[r["source"], r["billing_period"], r["currency"], r["lines"], f"{r['billed_cost']:.2f}", f"{r['effective_cost']:.2f}",
          f"{r['first_day']} .. {r['last_day']}", r["delivery_id"]] for r in per_period.iter_rows(named=True)],
    )


def reconciliation_markdown(table: pl.DataFrame) -> str:
    return md_table(
        ["source", "period", "currency", "status", "bill effective (held days)", "lake effective", "difference", "bill lines", "lake lines",
         "first day off", "pending days"],
        [[r["source"], r["billing_period"], r["currency"], r["status"], f"{r['held_bill_effective']}", f"{r['lake_effective']}",
          f"{r['difference']}", r["held_bill_lines"], r["lake_lines"], r["first_off_day"] or "", r["pending_days"]]
         for r in table.iter_rows(named=True)],
    )
