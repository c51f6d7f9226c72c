"""Tag-set hashes of a Parquet file's tags map computed from its dictionary pages, not its strings.

Polars decodes a map column into every line's key and value strings, on one core (3.9 s for the
43 M entries of a 10 M-line CUR 2.0 file), only for the lines to be hashed into their ``tag_set`` (the
lake keeps each distinct map once, see ``write_day.py``). PyArrow reads the same column with its keys
and values left as dictionary indices (0.95 s): a file's few distinct keys and values are hashed once
each, and every entry's hash is gathered by index and summed per line with the very arithmetic of
:func:`fingerprint.tag_set_hash`, so the hashes are the same numbers (tests compare them) and lakes
written either way agree. The distinct maps themselves are decoded from the first line of each tag
set, for the day's ``tag_sets`` table. A 10 M-line day's ingest: 10.2-12.2 s -> 8.1-8.9 s (the hashes
1.5-2.4 s of it, on two threads), a 1 M-line day's 1.73-1.83 s -> 1.03-1.43 s (same files, same hour).

The pass that writes the lake scans the file's other columns with Polars as before, with the file's
row index, and gathers each line's two hashes from here (:func:`hashed_tags`).
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cost_pipeline.lib.billing.columns import MAP_DTYPE
from cost_pipeline.lib.billing.fingerprint import EMPTY_MAP, NULL_MAP
from cost_pipeline.lib.billing.schema import MAP_ENTRIES
from cost_pipeline.lib.memory import reusing_freed_memory

SEEDS = (1, 2)  # the line's tag_set, and the second hash the ingest checks it with
ROW = "_row"  # the file row index the readers scan with, to gather each line's hashes (:meth:`HashedTags.at`)
THREADS = 2


@dataclass(frozen=True)
class HashedTags:
    """Each read line's two hashes, in file order of the read row groups, and the distinct maps.

    ``starts``/``ends``/``shifts``: a file row ``r`` in read group ``g`` (``starts[g] <= r < ends[g]``)
    is at position ``r - shifts[g]`` of ``tag_set``/``check``."""

    tag_set: pl.Series
    check: pl.Series
    starts: pl.Series
    ends: pl.Series
    shifts: pl.Series
    maps: pl.DataFrame  # tag_set, check, tags: each tag set's map as its first line holds it

    def at(self, row: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        """The hashes of the lines whose file row index is ``row`` (a lazy gather, streamed). A row of a
        group not read here is out of bounds, which fails the pass: a gather of another line's hashes
        (a negative position counts from the end) would give it a wrong tag set without a word."""
        row = row.cast(pl.Int64)
        if self.shifts.n_unique() == 1:  # the read groups are consecutive: one shift for all (a search
            # per line made Polars 2.1 hold the whole day: 3.6 GiB for 10 M lines)
            covered = (row >= self.starts[0]) & (row < self.ends[-1])
            position = row - self.shifts[0]
        else:
            group = (pl.lit(self.starts).search_sorted(row, side="right").cast(pl.Int64) - 1).clip(lower_bound=0)
            covered = (row >= pl.lit(self.starts).gather(group)) & (row < pl.lit(self.ends).gather(group))
            position = row - pl.lit(self.shifts).gather(group)
        position = pl.when(covered).then(position).otherwise(self.tag_set.len())
        return pl.lit(self.tag_set).gather(position), pl.lit(self.check).gather(position)


def _leaves(file: pq.ParquetFile, column: str) -> list[str] | None:
    """The key and value leaf paths of a map<string, string> column, or None for any other shape."""
    field = file.schema_arrow.field(column)
    if not pa.types.is_map(field.type) or not all(pa.types.is_string(t) or pa.types.is_large_string(t)
                                                   for t in (field.type.key_type, field.type.item_type)):
        return None
    paths = [file.schema.column(i).path for i in range(file.metadata.num_columns)]
    leaves = [p for p in paths if p.startswith(f"{column}.")]
    return leaves if len(leaves) == 2 else None


def _groups(meta: pq.FileMetaData, start_column: str, days: list[dt.date] | None) -> list[int]:
    """Row groups that may hold lines of ``days`` by their usage starts' statistics (every group
    whose statistics cannot say): a superset of what Polars reads for the same range."""
    groups = [g for g in range(meta.num_row_groups) if meta.row_group(g).num_rows]
    if not days:
        return groups
    index = [meta.schema.column(i).path for i in range(meta.num_columns)].index(start_column)
    low = dt.datetime.combine(min(days), dt.time(), tzinfo=dt.UTC)
    high = dt.datetime.combine(max(days) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    kept = []
    for g in groups:
        stats = meta.row_group(g).column(index).statistics
        lo, hi = (stats.min, stats.max) if stats is not None and stats.has_min_max else (None, None)
        if isinstance(lo, dt.datetime) and isinstance(hi, dt.datetime):
            lo, hi = (v if v.tzinfo else v.replace(tzinfo=dt.UTC) for v in (lo, hi))
            if hi < low or lo >= high:
                continue
        kept.append(g)
    return kept


def _string_hashes(strings: pa.Array, seed: int) -> np.ndarray:
    """Polars' hash of each string under ``seed``, and last the hash of a null string."""
    hashes = pl.Series(strings.cast(pa.large_string())).hash(seed=seed)
    return hashes.append(pl.Series([None], dtype=pl.String).hash(seed=seed)).to_numpy()


def _indices(entries: pa.DictionaryArray) -> np.ndarray:
    """Dictionary indices of ``entries``; a null value gets the index after the dictionary's last."""
    indices = entries.indices
    if indices.null_count:
        indices = pc.fill_null(indices, len(entries.dictionary))
    return indices.to_numpy(zero_copy_only=False)


def _line_hashes(maps: pa.MapArray, by_pairs: bool | None = None) -> tuple[np.ndarray, ...]:
    """:func:`fingerprint.tag_set_hash` of each map under each of :data:`SEEDS`: its entries' hashes
    summed (mod 2^64) per line. An entry's hash depends only on its (key, value) pair, so it is computed
    once per pair of the dictionaries and gathered ``by_pairs`` (default: when the pairs are fewer than
    the entries), else entry by entry."""
    keys, values = maps.keys, maps.items
    k, v = _indices(keys), _indices(values)
    width = len(values.dictionary) + 1
    offsets = maps.offsets.to_numpy(zero_copy_only=False)
    starts, empty = offsets[:-1] - offsets[0], offsets[1:] == offsets[:-1]
    k, v = k[offsets[0]:offsets[-1]], v[offsets[0]:offsets[-1]]  # this slice's entries
    nulls = maps.is_null().to_numpy(zero_copy_only=False) if maps.null_count else None
    code = None
    if by_pairs if by_pairs is not None else len(keys.dictionary) * width < len(k):
        code = k.astype(np.intp)  # what np.take indexes with (int32 codes: converted again per seed)
        code *= width
        code += v
    entry = np.zeros(len(k) + 1, np.uint64)  # one more: reduceat's index of trailing empty maps
    out = []
    for seed in SEEDS:
        key_hash, value_hash = _string_hashes(keys.dictionary, seed), _string_hashes(values.dictionary, seed + 10)
        if code is not None:
            table = pl.Series((key_hash[:-1, None] ^ value_hash[None, :]).ravel()).hash(seed=seed + 20).to_numpy()
            np.take(table, code, out=entry[:-1], mode="clip")  # the codes are in range: no checks
        else:
            entry[:-1] = pl.Series(key_hash[k] ^ value_hash[v]).hash(seed=seed + 20).to_numpy()
        with np.errstate(over="ignore"):
            sums = np.add.reduceat(entry, starts) if len(starts) else np.zeros(0, np.uint64)
            sums[empty] = 0  # reduceat gives an empty segment its next entry
            sums += np.uint64((seed * EMPTY_MAP) % 2**64)
        if nulls is not None:
            sums[nulls] = np.uint64((seed * NULL_MAP) % 2**64)
        out.append(sums)
    return tuple(out)


def _maps(chunk: pa.MapArray, rows: np.ndarray) -> pl.Series:
    """The maps of ``rows`` of ``chunk`` as Polars maps (strings decoded for these few lines only)."""
    taken = chunk.take(pa.array(rows))
    entries = pa.StructArray.from_arrays([pc.cast(taken.keys, pa.string()), pc.cast(taken.items, pa.string())], ["key", "value"])
    lists = pa.ListArray.from_arrays(taken.offsets, entries, mask=taken.is_null() if taken.null_count else None)
    return pl.Series("tags", lists).cast(MAP_ENTRIES).cast(MAP_DTYPE)


def _share(path: Path, leaves: list[str], column: str, groups: list[int]) -> list[tuple[np.ndarray, np.ndarray, pl.DataFrame]]:
    """:func:`_group` of each of ``groups``, through a reader of this thread's own."""
    file = pq.ParquetFile(path, read_dictionary=leaves)
    return [_group(file, column, g) for g in groups]


def _group(file: pq.ParquetFile, column: str, group: int) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """One row group's hashes and the first line of each of its tag sets with its map."""
    tag_set, check, firsts = [], [], []
    for chunk in file.read_row_group(group, columns=[column]).column(0).chunks:
        hashes = _line_hashes(chunk)
        tag_set.append(hashes[0])
        check.append(hashes[1])
        # the first line of each tag set (of a pair sharing a tag set, only the first's map is kept: that
        # day's lines then keep their maps anyway, see write_day.py)
        rows = np.flatnonzero(pl.Series(hashes[0]).is_first_distinct().to_numpy())
        firsts.append(pl.DataFrame({"tag_set": hashes[0][rows], "check": hashes[1][rows]}).with_columns(_maps(chunk, rows)))
    return np.concatenate(tag_set), np.concatenate(check), pl.concat(firsts)


def hashed_tags(path: Path, column: str, start_column: str, days: list[dt.date] | None) -> HashedTags | None:
    """The tag-set hashes of ``column`` for the row groups that may hold ``days`` (all: None); None
    when the column is not a map of strings, or PyArrow cannot read it (Polars then reads the maps,
    and its read names what is wrong). Row groups are hashed on two threads (PyArrow, NumPy and Polars
    release the GIL)."""
    try:
        return _hashed_file(path, column, start_column, days)
    except Exception:  # noqa: BLE001 - pyarrow raises several types for damaged pages and footers
        return None


def _hashed_file(path: Path, column: str, start_column: str, days: list[dt.date] | None) -> HashedTags | None:
    file = pq.ParquetFile(path)
    leaves = _leaves(file, column)
    if leaves is None or ROW in file.schema_arrow.names:  # a column of that name: no row index beside it
        return None
    groups = _groups(file.metadata, start_column, days)
    sizes = [file.metadata.row_group(g).num_rows for g in range(file.metadata.num_row_groups)]
    firsts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    read = np.concatenate([[0], np.cumsum([sizes[g] for g in groups])]).astype(np.int64)
    with reusing_freed_memory():  # each group's reads and buffers are freed as the next one's come
        return _hashed(path, leaves, column, groups, firsts, read)


def _hashed(path: Path, leaves: list[str], column: str, groups: list[int], firsts: np.ndarray, read: np.ndarray) -> HashedTags:
    with ThreadPoolExecutor(THREADS) as pool:  # each thread every THREADS-th group
        shares = list(pool.map(lambda first: _share(path, leaves, column, groups[first::THREADS]), range(THREADS)))
    done = [shares[i % THREADS][i // THREADS] for i in range(len(groups))]
    maps = pl.concat([d[2] for d in done]).unique("tag_set", keep="first", maintain_order=True) if done else None
    return HashedTags(
        tag_set=pl.Series("tag_set", np.concatenate([d[0] for d in done]) if done else [], pl.UInt64),
        check=pl.Series("check", np.concatenate([d[1] for d in done]) if done else [], pl.UInt64),
        starts=pl.Series("starts", [firsts[g] for g in groups] or [0], pl.Int64),
        ends=pl.Series("ends", [firsts[g + 1] for g in groups] or [0], pl.Int64),
        shifts=pl.Series("shifts", [firsts[g] - read[i] for i, g in enumerate(groups)] or [0], pl.Int64),
        maps=maps if maps is not None else pl.DataFrame(schema={"tag_set": pl.UInt64, "check": pl.UInt64, "tags": MAP_DTYPE}),
    )
