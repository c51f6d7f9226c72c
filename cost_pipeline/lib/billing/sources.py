"""One reader flow for every billing format: list → pick the current delivery → parse → validate.

Per format only two things differ, and they are declared in :data:`FORMATS`: how the current
delivery of each billing period is recognised (``lib/billing/deliveries.py``) and how one file is
parsed into cost lines (the provider's column mapping). Everything else is shared:

- every current delivery contributes the lines whose usage day is the day asked for, whichever
  billing period delivered them (credits and refunds often land in a later period);
- a line must have a usage date, an amount and a real currency; a line id delivered twice
  (the same file under two names, lines repeated in a second file) is an error naming both files;
- formats without provider line ids (FOCUS, GCP, Azure) get a content hash of the row plus its
  occurrence within the file, so a repeated file collides instead of being counted twice;
- a source whose path is missing or holds no data files is an error, never an empty day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cost_pipeline.config import BillingSource
from cost_pipeline.lib.billing import azure, cur2, cur_legacy, focus, gcp
from cost_pipeline.lib.billing.currencies import ISO_4217
from cost_pipeline.lib.billing.deliveries import (
    Delivery,
    data_export_deliveries,
    file_export_deliveries,
    legacy_cur_deliveries,
)
from cost_pipeline.lib.billing.fingerprint import content_hash, repeats, row_hashes, tag_set_hash
from cost_pipeline.lib.billing.parsed_cache import parsed
from cost_pipeline.lib.billing.schema import COST_LINES_SCHEMA, HASHES, empty_cost_lines
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.money import MONEY
from cost_pipeline.lib.storage import Storage, StoredFile

Reader = Callable[[Path, str, str, BillingSource], "pl.DataFrame | pl.LazyFrame"]
Picker = Callable[[list[StoredFile], Storage, tuple[str, ...]], list[Delivery]]


@dataclass(frozen=True)
class FileFormat:
    suffixes: tuple[str, ...]
    deliveries: Picker
    read: Reader  # (local path, file uri for messages, name under the source, source) -> cost lines, every day
    content_ids: bool = False  # the provider has no line ids: use a content hash of the row
    lazy: bool = False  # the reader scans lazily (Parquet; it takes ``days=``): no parsed copy is kept between days
    single_day: Callable[[Path], dt.date | None] | None = None  # the day of a file holding one, from its metadata
    # each line's usage ``date`` read without the rest of the line (None for a file whose days are read with its lines)
    usage_days: Callable[[Path], pl.LazyFrame | None] | None = None
    # whether a file's lines are known to repeat (its parsed copy says so): content ids are then numbered in the first pass
    identical_lines: Callable[[Path, BillingSource], bool] | None = None
    # a lazy reader of the files it can stream (like ``read`` with ``days=``; None for a file to read whole)
    scan: Callable[..., pl.LazyFrame | None] | None = None
    scan_hashes: bool = False  # ``scan`` takes ``maps=`` (see :func:`source_days`)


FORMATS: dict[str, FileFormat] = {
    "aws_cur2": FileFormat((".parquet",), data_export_deliveries, cur2.scan_cur2_file, lazy=True, single_day=cur2.single_day),
    "aws_cur_legacy": FileFormat((".csv", ".csv.gz", ".parquet"), legacy_cur_deliveries, cur_legacy.read_legacy_file,
                                 scan=cur_legacy.scan_legacy_file, scan_hashes=True),
    "focus": FileFormat((".csv", ".csv.gz", ".parquet"), file_export_deliveries, focus.read_focus_file, content_ids=True,
                        scan=focus.scan_focus_file, scan_hashes=True),
    "gcp_billing_export": FileFormat(gcp.SUFFIXES, file_export_deliveries, gcp.read_gcp_file, content_ids=True, scan=gcp.scan_gcp_file,
                                     scan_hashes=True, single_day=gcp.single_day, usage_days=gcp.usage_days),
    "azure_cost_export": FileFormat((".csv", ".csv.gz", ".parquet"), file_export_deliveries, azure.read_azure_file, content_ids=True,
                                    scan=azure.scan_azure_file, scan_hashes=True, identical_lines=azure.identical_lines),
}


def with_content_ids(lines: pl.DataFrame) -> pl.DataFrame:
    """``line_item_id`` = hash of the row's content + its occurrence among identical rows of the file."""
    if lines.is_empty():
        return lines
    digest = pl.Series("h", row_hashes(lines)).cast(pl.String)
    occurrence = pl.int_range(pl.len()).over("h").cast(pl.String)
    return lines.with_columns(digest).with_columns(line_item_id=pl.concat_str(["h", pl.lit("-"), occurrence])).drop("h")


def lazy_content_ids(lines: pl.LazyFrame, numbered: bool = True) -> pl.LazyFrame:
    """:func:`with_content_ids` of a lazily read file, without holding it: a first pass keeps only each
    line's content hash (8 bytes a line), sorted to find the few hashes that repeat; only the lines
    sharing one are numbered, and the plan joins their numbers back by position (every other line is
    its hash's first occurrence). Lines of one content share their usage start, so a file filtered to
    some days numbers them as the whole file does.

    ``numbered=False``: no first pass, every line its hash's first occurrence (``<hash>-0``). Exact for
    a file without identical lines, which real exports rarely have; where it has some, they share an id,
    which only a caller that checks its lines' keys may accept (:func:`lib.billing.write_day.ingest_days`
    then reads them again numbered). The first pass was 8.5 s of a 10 M-line FOCUS Parquet day's 21.7 s."""
    if not numbered:
        return lines.with_columns(line_item_id=pl.concat_str([content_hash(lines.collect_schema()).cast(pl.String), pl.lit("-0")]))
    hashed = lines.with_columns(_h=content_hash(lines.collect_schema())).with_row_index("_row")
    hashes = hashed.select("_h").collect(engine="streaming").to_series().sort()
    repeated = hashes.filter(hashes == hashes.shift(1)).unique()
    occurrence = pl.lit(0, pl.UInt32)
    if repeated.len():
        numbered = (hashed.select("_row", "_h").filter(pl.col("_h").is_in(repeated.implode())).collect(engine="streaming")
                    .select("_row", pl.int_range(pl.len(), dtype=pl.UInt32).over("_h").alias("_occurrence")))
        hashed = hashed.join(numbered.lazy(), on="_row", how="left", maintain_order="left")
        occurrence = pl.col("_occurrence").fill_null(0)
    return hashed.with_columns(line_item_id=pl.concat_str([pl.col("_h").cast(pl.String), pl.lit("-"), occurrence.cast(pl.String)])).select(
        lines.collect_schema().names())


def current_deliveries(source: BillingSource, storage: Storage) -> list[Delivery]:
    fmt = _format(source)
    listed = storage.list(source.uri)
    if not listed:
        raise InputError(source.uri, f"billing source {source.name!r}: the path does not exist or holds no files")
    deliveries = [d for d in fmt.deliveries(listed, storage, fmt.suffixes) if d.files]
    if not deliveries:
        raise InputError(source.uri, f"billing source {source.name!r}: no {source.format} data files ({', '.join(fmt.suffixes)}) found")
    return deliveries


def listed_files(source: BillingSource, storage: Storage) -> list[tuple[str, StoredFile]]:
    """Every file of the source's current deliveries, with its delivery's billing period, in listing order."""
    return [(delivery.period, file) for delivery in current_deliveries(source, storage) for file in delivery.files]


def _format(source: BillingSource) -> FileFormat:
    if source.format not in FORMATS:
        raise InputError(f"billing source {source.name!r}", f"format {source.format!r} is not readable")
    return FORMATS[source.format]


def scan_file(source: BillingSource, file: StoredFile, storage: Storage, days: list[dt.date] | None = None,
              ids: bool = True, numbered: bool = True, maps: list[pl.DataFrame] | None = None) -> pl.LazyFrame:
    """Every line of one delivered file (all days, or at least those of ``days``: a lazy reader may skip
    the row groups of other days), typed and validated; text files parsed once per version. ``ids``:
    False when the caller reads no line ids (the content ids of a streamed file take a pass of their own);
    ``numbered``: see :func:`lazy_content_ids`; ``maps``: see :func:`source_days`."""
    fmt = _format(source)
    if source.uri.startswith("bq://"):
        raise InputError(source.uri, "BigQuery tables are read by day, not by file")

    def parse() -> pl.DataFrame:
        frame = fmt.read(storage.fetch(file), file.uri, file.name, source)
        return with_content_ids(frame) if fmt.content_ids else frame

    if fmt.lazy:
        return fmt.read(storage.fetch(file), file.uri, file.name, source, days=days, **({"maps": maps} if maps is not None else {}))
    hashing = {"maps": maps} if maps is not None and fmt.scan_hashes else {}
    if fmt.scan and (lazy := fmt.scan(local := storage.fetch(file), file.uri, file.name, source, days=days, **hashing)) is not None:
        if not (fmt.content_ids and ids):
            return lazy
        # a file known to hold identical lines is numbered at once: left unnumbered, the caller's pass
        # would find them and run again numbered (a 10 M-line Azure day written twice)
        return lazy_content_ids(lazy, numbered or bool(fmt.identical_lines and fmt.identical_lines(local, source)))
    return parsed(file, source.name, parse).lazy()


_days_cache: dict[tuple[str, str, str], frozenset[dt.date]] = {}


def file_days(source: BillingSource, file: StoredFile, storage: Storage) -> frozenset[dt.date]:
    """The usage days a file holds (cached per file version); a line without a usage date is an error.
    A file whose metadata shows a single day (:attr:`FileFormat.single_day`) is not read for it."""
    key = (file.uri, file.version, source.name)
    fmt = _format(source)
    if key not in _days_cache and fmt.single_day and not source.uri.startswith("bq://"):
        day = fmt.single_day(storage.fetch(file))
        if day is not None:
            _days_cache[key] = frozenset([day])
    if key not in _days_cache:
        try:
            dates = fmt.usage_days(storage.fetch(file)) if fmt.usage_days else None
            dates = dates if dates is not None else scan_file(source, file, storage, ids=False).select("date")
            firsts = dates.with_row_index("record", offset=1).group_by("date").agg(pl.col("record").min()).collect()
        except pl.exceptions.PolarsError as exc:
            raise InputError(file.uri, f"cannot read billing data: {str(exc).splitlines()[0]}") from None
        empty = firsts.filter(pl.col("date").is_null())
        if empty.height:
            raise InputError(file.uri, f"record {empty['record'][0]}: the line has no usage start date")
        _days_cache[key] = frozenset(firsts["date"].to_list())
    return _days_cache[key]


def source_day(source: BillingSource, day: dt.date, storage: Storage | None = None, sums_checked: bool = False) -> pl.LazyFrame:
    """Every line of ``day`` from every current delivery of the source, whichever period holds it,
    validated, as a lazy plan that streams (a 10 M-line day is never held in memory to be written).

    Validation is one streaming pass per file over a few columns (so a value that does not parse
    names its file): amounts, ISO 4217 currencies, and a 64-bit hash of (line id, usage start) per
    line to find a line delivered twice; the lines of a suspected duplicate are then compared for real.
    ``sums_checked``: amounts and currencies are left to the caller's own pass, which sums the day per
    currency anyway (:func:`refuse_bad_sums`); evaluating the amortized cost twice was 0.8 s of 13 M lines.
    """
    return source_days(source, [day], storage, sums_checked)


def source_days(source: BillingSource, days: list[dt.date], storage: Storage | None = None, sums_checked: bool = False,
                keys_checked: bool = False, numbered: bool = True, maps: list[pl.DataFrame] | None = None,
                held: Sequence[HeldFile] | None = None) -> pl.LazyFrame:
    """:func:`source_day` of several days at once: each file holding any of them is read once.
    ``keys_checked``: lines delivered twice are left to the caller's pass too (:data:`LINE_KEY`,
    :func:`refuse_repeated_keys`), so the files are not read once more for their keys; only then may
    content ids be left unnumbered (``numbered=False``, :func:`lazy_content_ids`).

    ``maps``: every line comes with its tag-set hashes (:data:`schema.HASHES`); a reader that computes
    them without decoding the maps (CUR 2.0 Parquet, :mod:`map_hashes`) leaves the lines' ``tags``
    null and appends each file's distinct maps to ``maps``, the others hash the maps they read.

    ``held``: the run's :func:`day_files` of these days (any source's), when the caller listed the
    source already; else the source is listed here. A backfill's every batch listed the whole source
    again: a year of daily files, 377 files stat'ed and 12 manifests read per day (14-20 ms a listing, growing
    with the source; on S3 a bucket listing per day)."""
    numbered = numbered or not keys_checked
    storage = storage or Storage()
    if source.uri.startswith("bq://"):
        parts = []
        for day in days:
            table = source.uri[len("bq://"):]
            folder = storage.cache_dir / "bigquery" / source.name / table / day.isoformat()
            # numbered always: identical rows left unnumbered would make the ingest run the (billed) query again
            lines = lazy_content_ids(pl.scan_parquet(gcp.bigquery_day_files(table, day, source.name, storage.bigquery_client(), folder)))
            parts.append(_validated(lines.with_columns(billing_period=pl.col("invoice_id")), source, source.uri, sums_checked, keys_checked, maps is not None))
        _refuse_duplicates(parts, source)
        return pl.concat([lines for lines, _ in parts])
    wanted = set(days)
    in_days = pl.col("date") == days[0] if len(days) == 1 else pl.col("date").is_in(sorted(wanted))
    if held is None:
        files = listed_files(source, storage)
    else:  # in the listing's order, as listed here
        files = [(h.period, h.file) for h in sorted(held, key=lambda h: h.position) if h.source.name == source.name]
    parts = []
    for period, file in files:
        if wanted & file_days(source, file, storage):
            lines = scan_file(source, file, storage, sorted(wanted), numbered=numbered, maps=maps).filter(in_days).with_columns(billing_period=pl.lit(period))
            parts.append(_validated(lines, source, file.uri, sums_checked, keys_checked, maps is not None))
    if not parts:
        return _validated(empty_cost_lines().lazy(), source, source.uri, True, True, maps is not None)[0]
    _refuse_duplicates(parts, source)
    return pl.concat([lines for lines, _ in parts])


@dataclass(frozen=True)
class HeldFile:
    """A current delivery's file holding some of a run's days, with the source that delivered it, the
    delivery's billing period and the file's position in the source's listing."""

    source: BillingSource
    file: StoredFile
    period: str
    position: int


def day_files(sources: list[BillingSource], days: list[dt.date], storage_for: Callable[[BillingSource], Storage]) -> dict[dt.date, dict[str, HeldFile]]:
    """The billing files holding each of ``days``, by URI."""
    held: dict[dt.date, dict[str, HeldFile]] = {day: {} for day in days}
    for source in sources:
        if source.uri.startswith("bq://"):
            continue
        storage = storage_for(source)
        for position, (period, file) in enumerate(listed_files(source, storage)):
            for day in file_days(source, file, storage) & held.keys():
                held[day][file.uri] = HeldFile(source, file, period, position)
    return held


def day_batches(sources: list[BillingSource], days: list[dt.date], storage_for: Callable[[BillingSource], Storage],
                max_days: int, files: dict[dt.date, dict[str, HeldFile]] | None = None) -> list[list[dt.date]]:
    """``days`` (in order) cut into runs of consecutive days that share a billing file, at most
    ``max_days`` each: each batch is written in one pass, so a file holding many days (an export's
    month parts) is read once per batch instead of once per day. Days in files of their own stay alone.
    ``files``: :func:`day_files` of ``days``, if the caller has it."""
    held = files if files is not None else day_files(sources, days, storage_for)
    batches: list[list[dt.date]] = []
    for day in days:
        last = batches[-1] if batches else None
        if last and len(last) < max_days and held[day].keys() & held[last[-1]].keys():
            last.append(day)
        else:
            batches.append([day])
    return batches


def batch_files(batch: list[dt.date], files: dict[dt.date, dict[str, HeldFile]]) -> list[HeldFile]:
    """The billing files a batch of days reads, each once."""
    return list({uri: held for day in batch for uri, held in files[day].items()}.values())


def batch_bytes(batch: list[dt.date], files: dict[dt.date, dict[str, HeldFile]]) -> int:
    """The size of the billing files a batch of days reads (each file once)."""
    return sum(held.file.size for held in batch_files(batch, files))


def read_source_day(source: BillingSource, day: dt.date, storage: Storage | None = None) -> pl.DataFrame:
    return source_day(source, day, storage).collect(engine="streaming")


KEY = ["line_item_id", "charge_period_start"]
# a 64-bit hash of the key per line (columns hashed alone and combined: a third of a struct hash's time)
KEY_HASH = pl.col("line_item_id").hash(seed=3) ^ pl.col("charge_period_start").hash(seed=4)


# the key hash of a line within its source, for a caller's pass over several sources (``keys_checked``):
# a line repeated within a source repeats it; lines of two sources almost never share it
LINE_KEY = KEY_HASH ^ pl.col("source").hash(seed=5)

NO_AMOUNT = pl.col("effective_cost").is_null() | pl.col("billed_cost").is_null()


def _validated(lines: pl.LazyFrame, source: BillingSource, where: str, sums_checked: bool = False,
               keys_checked: bool = False, hashes: bool = False) -> tuple[pl.LazyFrame, pl.Series]:
    """``lines`` with the contract's columns (and, for ``hashes``, the tag-set hashes, computed from
    the maps if the reader did not), checked unless the caller checks them (see :func:`source_day`)."""
    computed = HASHES[0] in lines.collect_schema() if hashes else False
    lines = lines.select(*(pl.col(c).cast(t) for c, t in COST_LINES_SCHEMA.items()), *(HASHES if computed else []))
    if hashes and not computed:
        lines = lines.with_columns(tag_set_hash().alias(HASHES[0]), tag_set_hash(seed=2).alias(HASHES[1]))
    if sums_checked and keys_checked:  # the caller's pass checks everything: no pass of its own
        return lines, pl.Series("key", [], pl.UInt64)
    no_amount = NO_AMOUNT
    bad_currency = ~pl.col("currency").is_in(ISO_4217) | pl.col("currency").is_null()
    if sums_checked:
        # the caller's sums hold both; a cost value that does not parse then fails the caller's pass,
        # which names the file through explain_unreadable (this pass no longer reads the cost columns)
        no_amount, bad_currency = pl.lit(False), pl.lit(False)
    try:
        check = lines.select(
            KEY_HASH.alias("key"), no_amount.alias("no_amount"), bad_currency.alias("bad_currency")
        ).collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        raise InputError(where, f"cannot read billing data: {str(exc).splitlines()[0]}") from None
    if check["no_amount"].any():
        row = lines.filter(no_amount).head(1).collect().row(0, named=True)
        raise InputError(where, f"{check['no_amount'].sum()} line(s) without an amount, e.g. line {row['line_item_id']} ({row['charge_type']})")
    if check["bad_currency"].any():
        row = lines.filter(bad_currency).head(1).collect().row(0, named=True)
        raise InputError(where, f"unknown currency {str(row['currency'])[:20]!r} on {check['bad_currency'].sum()} line(s), e.g. line {row['line_item_id']}")
    return lines, check["key"]


def refuse_bad_sums(sums: pl.DataFrame, sources: list[BillingSource], day: dt.date, storage_for: Callable[[BillingSource], Storage]) -> None:
    """The checks :func:`source_day` left to the caller (``sums_checked``), from the day's sums per
    (source, currency) with ``no_amount`` (lines without an amount): on a bad amount or currency the
    source's files are validated one by one, which names the file and an example line."""
    bad = sums.filter((pl.col("no_amount") > 0) | pl.col("currency").is_null() | ~pl.col("currency").is_in(ISO_4217))
    for name in bad["source"].unique(maintain_order=True).to_list():
        source = next(s for s in sources if s.name == name)
        source_day(source, day, storage_for(source))  # raises the file's own error
        raise InputError(source.uri, f"{day}: lines without an amount or with an unknown currency")


def uses_content_ids(source: BillingSource) -> bool:
    return _format(source).content_ids


def refuse_repeated_keys(keys: pl.Series, sources: list[BillingSource], days: list[dt.date],
                         storage_for: Callable[[BillingSource], Storage]) -> None:
    """The check :func:`source_days` left to the caller (``keys_checked``), from the :data:`LINE_KEY`
    of every line the caller's pass read (with numbered content ids): on a repeated key the sources are
    validated file by file, which names the line and both files (a repeat that is a 64-bit collision,
    not a duplicate, passes)."""
    if not repeats(keys):
        return
    for source in sources:
        source_days(source, days, storage_for(source), sums_checked=True)  # raises the duplicate's own error


def explain_unreadable(sources: list[BillingSource], day: dt.date, storage_for: Callable[[BillingSource], Storage]) -> None:
    """After a pass over :func:`source_day` plans (``sums_checked``) failed to read a value: validate
    the sources' files one by one, which raises the error naming the file."""
    for source in sources:
        source_day(source, day, storage_for(source))


def _refuse_duplicates(parts: list[tuple[pl.LazyFrame, pl.Series]], source: BillingSource) -> None:
    keys = pl.concat([k for _, k in parts]).sort()  # sorted, a repeat is its neighbour: 0.3 s for 13 M (is_duplicated: 2.7 s)
    suspects = keys.filter(keys == keys.shift(1)).unique()
    if suspects.is_empty():
        return
    candidates = pl.concat([
        lines.filter(KEY_HASH.is_in(suspects.implode())).select(*KEY, "source_file") for lines, _ in parts
    ]).collect()
    twice = candidates.filter(pl.struct(KEY).is_duplicated())
    if twice.is_empty():  # a 64-bit hash collision, not a duplicate
        return
    first = twice.row(0, named=True)
    files = sorted(set(twice.filter(pl.col("line_item_id") == first["line_item_id"])["source_file"].to_list()))
    extra = twice.height - twice.select(KEY).n_unique()
    raise InputError(
        source.uri,
        f"{extra} line(s) delivered more than once, e.g. line {first['line_item_id']} in "
        + (" and ".join(files) if len(files) > 1 else f"{files[0]} (twice)"),
    )


TOTALS_SCHEMA = {
    "source": pl.String(), "billing_period": pl.String(), "delivery_id": pl.String(), "date": pl.Date(),
    "currency": pl.String(), "lines": pl.Int64(), "billed_cost": MONEY, "effective_cost": MONEY, "files": pl.Int64(),
}
SUMS_SCHEMA = {c: TOTALS_SCHEMA[c] for c in ("date", "currency", "lines", "billed_cost", "effective_cost")}
# :func:`files_summed` of single files, by the version they were summed from (``lib/billing/file_totals.py``)
FILE_SUMS_SCHEMA = {"uri": pl.String(), "version": pl.String(), **SUMS_SCHEMA}


def bill_totals(source: BillingSource, storage: Storage | None = None, known: pl.DataFrame | None = None,
                file_sums: pl.DataFrame | None = None, counts: dict[str, int] | None = None) -> pl.DataFrame:
    """Per billing period and usage day of the current deliveries: lines, billed and effective cost.

    Computed from the delivered files themselves; ``known`` (the previous table) is reused for
    deliveries that did not change, so a steady state reads no billing file, and ``file_sums``
    (in :data:`FILE_SUMS_SCHEMA`) for files summed before in the version delivered now. ``counts``
    gains the files read (``read``) and taken from ``file_sums`` (``summed_before``).
    """
    storage = storage or Storage()
    if source.uri.startswith("bq://"):
        return pl.DataFrame(schema=TOTALS_SCHEMA)
    counts = {} if counts is None else counts
    frames = []
    for delivery in current_deliveries(source, storage):
        if known is not None:
            same = known.filter((pl.col("source") == source.name) & (pl.col("delivery_id") == delivery.id))
            if same.height:
                frames.append(same)
                continue
        for file in delivery.files:
            file_days(source, file, storage)  # validates usage dates before summing
        before = _summed_before(file_sums, delivery.files)
        taken = set(before["uri"])
        unread = [f for f in delivery.files if f.uri not in taken]
        counts["read"] = counts.get("read", 0) + len(unread)
        counts["summed_before"] = counts.get("summed_before", 0) + len(delivery.files) - len(unread)
        parts = [before.drop("uri", "version"), *([files_summed(source, unread, storage)] if unread else [])]
        frames.append(
            pl.concat([p.cast(SUMS_SCHEMA) for p in parts])
            .group_by("date", "currency").agg(pl.col("lines").sum(), pl.col("billed_cost").sum(), pl.col("effective_cost").sum())
            .with_columns(source=pl.lit(source.name), billing_period=pl.lit(delivery.period), delivery_id=pl.lit(delivery.id),
                          files=pl.lit(len(delivery.files)))
            .select([pl.col(c).cast(t) for c, t in TOTALS_SCHEMA.items()])
        )
    return pl.concat(frames).sort("source", "billing_period", "date", "currency")


def _summed_before(file_sums: pl.DataFrame | None, files: Sequence[StoredFile]) -> pl.DataFrame:
    """The rows of ``file_sums`` of ``files`` in the versions delivered now."""
    if file_sums is None or not files:
        return pl.DataFrame(schema=FILE_SUMS_SCHEMA)
    current = pl.DataFrame({"uri": [f.uri for f in files], "version": [f.version for f in files]}, schema={"uri": pl.String(), "version": pl.String()})
    return file_sums.join(current, on=["uri", "version"], how="semi")


def files_summed(source: BillingSource, files: Sequence[StoredFile], storage: Storage) -> pl.DataFrame:
    """Lines, billed and effective cost per usage day and currency of a delivery's files, in one plan
    over all of them (a plan per file cost ~0.1 s each of a year's 365 daily files: 2.6-3.2 s against
    2.2-2.3 s for a month of 1 M-line days). When that plan fails, the files are summed one by one: a
    file that does not read gets the error naming it (files whose columns differ are summed apart)."""
    def summed(frame: pl.LazyFrame) -> pl.DataFrame:
        return (frame.group_by("date", "currency")
                .agg(pl.len().cast(pl.Int64).alias("lines"), pl.col("billed_cost").sum(), pl.col("effective_cost").sum())
                .collect(engine="streaming"))

    try:
        return summed(pl.concat([scan_file(source, file, storage, ids=False) for file in files]))
    except pl.exceptions.PolarsError:
        pass
    per_file = []
    for file in files:
        try:
            per_file.append(summed(scan_file(source, file, storage, ids=False)))
        except pl.exceptions.PolarsError as exc:
            raise InputError(file.uri, f"cannot read billing data: {str(exc).splitlines()[0]}") from None
    return pl.concat(per_file).group_by("date", "currency").agg(pl.col("lines").sum(), pl.col("billed_cost").sum(), pl.col("effective_cost").sum())


def changed_days(source: BillingSource, changed: list[StoredFile], storage: Storage, recorded: dict[str, set[dt.date]]) -> set[dt.date]:
    """The days a new or re-delivered file can change: every day its current delivery holds, plus the
    days that period's previous delivery held (``recorded``, from ``bill_totals``), whose lines may
    have moved or gone."""
    uris = {f.uri for f in changed}
    days: set[dt.date] = set()
    for delivery in current_deliveries(source, storage):
        touched = (delivery.manifest and delivery.manifest.uri in uris) or any(f.uri in uris for f in delivery.files)
        if touched:
            days |= recorded.get(delivery.period, set())
            for file in delivery.files:
                days |= file_days(source, file, storage)
    return days
