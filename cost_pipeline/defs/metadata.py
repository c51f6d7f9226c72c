"""Dagster metadata describing one day of a lake table, shown per partition in the UI."""

from __future__ import annotations

import hashlib

import dagster as dg
import polars as pl


def column_schema(frame: pl.DataFrame | pl.Schema) -> dg.TableSchema:
    schema = frame if isinstance(frame, pl.Schema) else frame.schema
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in schema.items()])


def money_totals(frame: pl.DataFrame, columns: list[str]) -> dict[str, dg.MetadataValue]:
    """One entry per amount column and currency, to the cent (exact sums, rounded for display)."""
    if frame.is_empty():
        return {}
    sums = frame.group_by("currency").agg([pl.col(c).sum() for c in columns]).sort("currency")
    out: dict[str, dg.MetadataValue] = {}
    for row in sums.iter_rows(named=True):
        for column in columns:
            out[f"{column} ({row['currency']})"] = dg.MetadataValue.float(float(round(row[column], 2)))
    return out


def day_metadata(frame: pl.DataFrame, path: str, amount_columns: list[str]) -> dict:
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame),
        "path": dg.MetadataValue.path(path),
        **money_totals(frame, amount_columns),
    }


def content_version(fingerprints: list[str]) -> dg.DataVersion:
    """The run's data version from the content fingerprints of its days: re-materializing a day whose
    content did not change (a restatement with the same charges) leaves downstream days fresh.

    Dagster records one data version per run, so a range run's days share the hash of all of them."""
    if len(fingerprints) == 1:
        return dg.DataVersion(fingerprints[0])
    return dg.DataVersion(hashlib.sha256("|".join(fingerprints).encode()).hexdigest()[:20])
