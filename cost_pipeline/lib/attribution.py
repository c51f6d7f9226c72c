"""A day's attribution: classify each distinct combination of what the rules read, not each line.

The tag schema, the virtual-tag rules and the pool selectors read little of a line: the values of
the raw tag keys they name, the account, the service, and whether the resource id starts with one of
the configured prefixes. A 13 M-line day holds about 10^5 distinct combinations of those, so:

1. one streaming group-by sums the day per combination (exact decimals, line counts);
2. the combinations go through the same per-line code as always (``lib/tags``, ``lib/pools``), with
   a tags map rebuilt from their values and a resource id that has their prefix flags, so every
   combination gets the reason, canonical tags and pool its lines would get one by one;
3. only the quarantine needs lines: a second streaming pass keeps the lines of failing combinations
   (an inner join on the combination, nulls equal) with their reason.

Classifying 13 M lines one by one took 20 s on this machine, most of it string work repeated on the
same few values (trim, lower-case, patterns, provenance). The ingest stores each distinct map of
the day once, in ``tag_sets``, and gives each line its ``tag_set`` instead of the map (see
``lib/billing/write_day.py``): the first pass reads no map at all (3 s for the sums, 4 s for the
quarantine's pass), and the quarantined lines get their maps back from the tag sets. Days written
before (or whose maps shared a hash) still carry the maps and are read by them.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cost_pipeline.config import Pool, TaggingConfig
from cost_pipeline.lib.allocate import allocate_sums, allocation_from_attribution_sums, attribution_sums
from cost_pipeline.lib.billing.schema import COST_LINES_SCHEMA
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.keys import fold_key
from cost_pipeline.lib.pools import classify_plan
from cost_pipeline.lib.tags import CLASSIFY_COLUMNS, TAG_COLUMNS_REASON, day_tag_keys, quarantine, raw_tag_keys
from cost_pipeline.lib.usage import read_usage

LINE_KEYS = ["date", "currency", "sub_account_id", "service"]
TAGS_MAP = pl.Map(pl.String(), pl.String())


def rule_tag_keys(raw_keys: list[str], schema: TaggingConfig, pools: list[Pool]) -> list[str]:
    """The raw tag keys of the day that the schema, a virtual-tag rule or a pool selector names
    (after key folding); other tags (``Name``, ``owner`` ...) cannot change who pays."""
    names = [k.key for k in schema.keys] + [a for spellings in schema.aliases.values() for a in spellings]
    for rule in schema.virtual_tags:
        names += [*(rule.tag_equals or {}), *rule.set_from_tag.values()]
    for pool in pools:
        names += list(pool.select.tags or {})
    folded = {fold_key(n) for n in names}
    return [raw for raw in raw_keys if fold_key(raw) in folded]


def rule_prefixes(schema: TaggingConfig, pools: list[Pool]) -> list[str]:
    found = [p for rule in schema.virtual_tags for p in rule.resource_prefixes or []]
    found += [p for pool in pools for p in pool.select.resource_prefixes or []]
    return sorted(set(found))


MASK_BITS = 64  # resource prefixes per mask column


@dataclass(frozen=True)
class Combination:
    """What the rules read of a line, as columns: the tags (``_tag_<i>`` per raw key, or the line's
    ``tag_set`` when the day's tag sets are known), and which resource prefixes its resource id starts
    with, as bits of ``_prefixes_<k>`` (prefix ``j`` is bit ``j % 64`` of mask ``j // 64``).

    The rules read a resource id only through those prefixes, so a combination's lines are classified by
    a stand-in id (:meth:`stand_in`) instead of the first of their ids, which the group-by had to carry
    as a string per group (with a column per prefix besides): the bench's 10 M-line day with the demo's
    nine prefixes, attributed with pools, 2.06-2.53 s -> 2.00-2.08 s (same file, side by side)."""

    raw_keys: list[str]
    prefixes: list[str]
    tag_sets: pl.DataFrame | None = None  # (tag_set, tags): each distinct map of the day once

    @property
    def names(self) -> list[str]:
        tags = ["tag_set"] if self.tag_sets is not None else [f"_tag_{i}" for i in range(len(self.raw_keys))]
        return [*LINE_KEYS, *tags, *self._masks]

    @property
    def _masks(self) -> list[str]:
        return [f"_prefixes_{k}" for k in range(-(-len(self.prefixes) // MASK_BITS))]

    def _bit(self, j: int) -> pl.Expr:
        return pl.lit(1 << (j % MASK_BITS), pl.UInt64)

    def of_lines(self, lines: pl.LazyFrame) -> pl.LazyFrame:
        resource = pl.col("resource_id").fill_null("")
        tags = [] if self.tag_sets is not None else [pl.col("tags").map.get(raw).alias(f"_tag_{i}") for i, raw in enumerate(self.raw_keys)]
        bits = [pl.when(resource.str.starts_with(p)).then(self._bit(j)).otherwise(pl.lit(0, pl.UInt64)) for j, p in enumerate(self.prefixes)]
        masks = [pl.sum_horizontal(bits[k * MASK_BITS:(k + 1) * MASK_BITS]).alias(name) for k, name in enumerate(self._masks)]
        return lines.with_columns(*tags, *masks)

    def stand_in(self) -> pl.Expr:
        """A resource id that starts with exactly the prefixes of a combination's bits: the longest of
        them (the others are its own prefixes, as they all start the same ids), null for none."""
        longest_first = sorted(range(len(self.prefixes)), key=lambda j: -len(self.prefixes[j]))
        bit = [(pl.col(self._masks[j // MASK_BITS]) & self._bit(j)) != 0 for j in range(len(self.prefixes))]
        return pl.coalesce(*(pl.when(bit[j]).then(pl.lit(self.prefixes[j])) for j in longest_first), pl.lit(None, pl.String)).alias("resource_id")

    def as_lines(self, combinations: pl.LazyFrame) -> pl.LazyFrame:
        """Combinations shaped like cost lines for the classifier, with their tags map."""
        if self.tag_sets is not None:
            return combinations.join(self.tag_sets.lazy().with_columns(_known=pl.lit(True)), on="tag_set", how="left")
        if not self.raw_keys:
            return combinations.with_columns(tags=pl.lit(None, TAGS_MAP))
        entries = [pl.struct(key=pl.lit(raw), value=pl.col(f"_tag_{i}")) for i, raw in enumerate(self.raw_keys)]
        present = pl.element().struct.field("value").is_not_null()
        return combinations.with_columns(tags=pl.concat_list(entries).list.filter(present).cast(TAGS_MAP))

    def quarantine(self, lines: pl.LazyFrame, failing: pl.DataFrame) -> pl.LazyFrame:
        """The lines of the failing combinations, with their reason (maps from the tag sets if known,
        so the lines' own maps are never decoded)."""
        # in the lines' own order, so the same day gives the same file
        keep = {"on": self.names, "how": "inner", "nulls_equal": True, "maintain_order": "left"}
        if self.tag_sets is None:
            return quarantine(self.of_lines(lines).join(failing.lazy(), **keep))
        # only lines of a failing tag set can fail: filtering on that one integer column first means the
        # other columns are decoded for those lines only (a 13 M-line day's pass: 3.5 s -> 1.6 s)
        lines = lines.drop("tags", strict=False).filter(pl.col("tag_set").is_in(failing["tag_set"].unique().implode()))
        joined = self.of_lines(lines).join(failing.lazy(), **keep)
        return quarantine(joined.join(self.tag_sets.lazy(), on="tag_set", how="left", maintain_order="left"))


@dataclass(frozen=True)
class DayAttribution:
    sums: pl.DataFrame  # attribution_sums of the day: what compliance and allocation derive from
    failing: pl.DataFrame  # the combinations that fail the schema, with their reason
    combination: Combination
    lines: pl.LazyFrame  # the day's lines, for the quarantine's pass

    def quarantine(self) -> pl.LazyFrame:
        """The day's ``untagged_spend`` lines, as a lazy plan to sink (the second pass)."""
        return self.combination.quarantine(self.lines, self.failing)


def map_keys(tag_sets: pl.DataFrame) -> list[str]:
    return sorted(tag_sets.select(pl.col("tags").map.keys().explode().drop_nulls().unique()).to_series().to_list())


def attribute_day(lines: pl.LazyFrame, raw_keys: list[str] | None, schema: TaggingConfig, pools: list[Pool],
                  tag_sets: pl.DataFrame | None = None) -> DayAttribution:
    """Sum ``lines`` (cost_lines columns of one day) per combination, classify the combinations.

    With the day's ``tag_sets`` (and a ``tag_set`` column in ``lines``) the maps are not read per
    line; a line whose ``tag_set`` is not in them (a table older than its lines) makes the day fall
    back to its lines' maps, or, for lines stored without maps, an error asking to re-ingest the day.
    ``raw_keys``: the day's tag keys (None: from the tag sets, or a pass).
    """
    if tag_sets is not None:
        combination = Combination(rule_tag_keys(map_keys(tag_sets), schema, pools), rule_prefixes(schema, pools), tag_sets)
    else:
        raw_keys = raw_keys if raw_keys is not None else raw_tag_keys(lines)
        combination = Combination(rule_tag_keys(raw_keys, schema, pools), rule_prefixes(schema, pools))
    summed = (
        combination.of_lines(lines.drop("tags", strict=False) if tag_sets is not None else lines)
        .group_by(combination.names)
        .agg(pl.col("effective_cost").sum(), pl.len().alias("lines"))
        .collect(engine="streaming")
        .with_columns(combination.stand_in())
    )
    shaped = combination.as_lines(summed.lazy()).collect()
    if tag_sets is not None:
        unknown = shaped.filter(pl.col("_known").is_null())
        if unknown.height:
            if "tags" not in lines.collect_schema().names():
                day = unknown["date"].drop_nulls().min()
                raise InputError("cost_lines", f"{day}: {unknown['lines'].sum()} line(s) have a tag_set that the day's tag_sets table does "
                                 "not hold (a run interrupted between the two tables?): materialize cost_lines for the day again")
            return attribute_day(lines, raw_keys, schema, pools)
        shaped = shaped.drop("_known")
    tagged = classify_plan(shaped.lazy(), combination.raw_keys, schema, pools).collect()
    failing = tagged.filter(pl.col(TAG_COLUMNS_REASON).is_not_null()).select(*combination.names, TAG_COLUMNS_REASON)
    return DayAttribution(attribution_sums(tagged).collect(), failing, combination, lines)


def lake_day(lake, day) -> tuple[pl.LazyFrame, pl.DataFrame | None]:
    """A ``cost_lines`` day with the columns attribution reads, and its tag sets when the lake has
    them; lines carrying their maps (days written before tag sets, or whose maps shared a hash) are
    read by their maps when there are no tag sets."""
    lines = lake.scan_days("cost_lines", [day])
    names = lines.collect_schema().names()
    tag_sets = lake.scan_days("tag_sets", [day]).collect() if "tag_set" in names and lake.has_day("tag_sets", day) else None
    if "tags" in names and (tag_sets is None or tag_sets.is_empty()):
        return lines.select(CLASSIFY_COLUMNS), None
    if tag_sets is None:
        raise InputError(lake.location("tag_sets", f"date={day}"), "missing: the day's cost_lines hold no tags maps, only "
                         "tag_set references into this table; materialize cost_lines for the day again")
    return lines.select(*(c for c in CLASSIFY_COLUMNS if c != "tags"), "tag_set"), tag_sets


def attribute_lake_day(lake, day, schema: TaggingConfig, pools: list[Pool]) -> DayAttribution:
    """:func:`attribute_day` of a lake day: by its tag sets, or (a day written without them) by its
    maps, with the tag keys read from the file's key column."""
    lines, tag_sets = lake_day(lake, day)
    return attribute_day(lines, day_tag_keys(lake, day, lines) if tag_sets is None else None, schema, pools, tag_sets)


def allocate_day(lake, day, settings, sums: pl.DataFrame) -> pl.DataFrame:
    """``allocated_costs`` of a lake day from its attribution ``sums`` under ``settings``' rules, the
    pools split by the day's usage (a missing usage day: FileNotFoundError)."""
    pools = settings.allocation.pools
    samples = read_usage(lake, [day]) if pools else None
    return allocate_sums(allocation_from_attribution_sums(sums), settings.rules_version, pools, samples, settings.tagging)


def lines_with_tags(lake, days) -> pl.LazyFrame:
    """``cost_lines`` of ``days`` with each line's tags map (joined from the day's tag sets), in the
    lines' order: the table as delivered (a map's entries in the order of the day's first line with the
    same tags), for readers that want a line's tags."""
    frames = []
    for day in days:
        lines = lake.scan_days("cost_lines", [day])
        if "tags" not in lines.collect_schema().names():
            lines = lines.join(lake.scan_days("tag_sets", [day]).select("tag_set", "tags"), on="tag_set", how="left", maintain_order="left")
        frames.append(lines.select(list(COST_LINES_SCHEMA)))
    return pl.concat(frames) if frames else pl.LazyFrame(schema=COST_LINES_SCHEMA)
