"""The pooled SQLite event log (``cost_pipeline/instance/sqlite_storage.py``) of the local instance config."""

import os
import shutil
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from cost_pipeline.instance.sqlite_storage import OPEN_DATABASES

LOCAL_CONFIG = Path(__file__).resolve().parents[1] / "deployments" / "local" / "dagster.yaml"


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b", "c"]))
def numbers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"n": ord(context.partition_key)})


def _open_databases(base: Path) -> set[str]:
    """The database files of ``base`` this process holds open (a connection keeps its .db open)."""
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(base)) and target.endswith(".db"):
            names.add(target)
    return names


def test_pooled_event_log_keeps_few_databases_open_and_reads_like_the_stock_one(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(LOCAL_CONFIG, home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    runs = OPEN_DATABASES + 4
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert type(storage).__name__ == "PooledSqliteEventLogStorage"
        for i in range(runs):  # each run its own database, as Dagster's SQLite storage keeps them
            assert dg.materialize([numbers], instance=instance, partition_key="abc"[i % 3]).success
        open_now = _open_databases(home)
        # the index and at most OPEN_DATABASES runs; the oldest runs' connections were closed
        assert 2 <= len(open_now) <= OPEN_DATABASES + 1, open_now
        assert str(home / "history" / "runs" / "index.db") in open_now
        last_run = instance.get_runs(limit=1)[0].run_id  # a database created by this storage
        for connection in (storage.index_connection(), storage.run_connection(last_run)):
            with connection as conn:  # WAL databases commit without a sync per event
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        pooled = sorted(r.partition_key for r in instance.fetch_materializations(dg.AssetKey("numbers"), limit=100).records)
        assert pooled == sorted("abc"[i % 3] for i in range(runs))
    assert not _open_databases(home)  # disposing the instance closes them
    # the same home read by Dagster's stock storage (no dagster.yaml): the same runs and events
    (home / "dagster.yaml").unlink()
    with dg.DagsterInstance.get() as stock:
        assert type(stock.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert len(stock.get_runs()) == runs
        records = stock.fetch_materializations(dg.AssetKey("numbers"), limit=100).records
        assert sorted(r.partition_key for r in records) == pooled
        assert sorted(r.asset_materialization.metadata["n"].value for r in records) == sorted(ord("abc"[i % 3]) for i in range(runs))


DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-11")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def days(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    for key in context.partition_keys:
        context.add_asset_metadata({"day": int(key[-2:])}, partition_key=key)
    return dg.MaterializeResult()


def _index_rows(home: Path) -> dict[str, list]:
    """What the cross-run index holds of the asset's events (ids aside, which differ between homes)."""
    import sqlite3

    with sqlite3.connect(home / "history" / "runs" / "index.db") as db:
        return {
            "events": db.execute("SELECT dagster_event_type, asset_key, partition FROM event_logs WHERE asset_key IS NOT NULL "
                                 "ORDER BY dagster_event_type, partition").fetchall(),
            "asset_keys": db.execute("SELECT asset_key FROM asset_keys").fetchall(),
        }


def _ranged_run(home: Path, monkeypatch, batch: str) -> tuple[list, set[str], dict]:
    home.mkdir()
    shutil.copy(LOCAL_CONFIG, home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([days], instance=instance, tags={ASSET_PARTITION_RANGE_START_TAG: "2026-01-01", ASSET_PARTITION_RANGE_END_TAG: "2026-01-10"})
        assert result.success
        records = instance.fetch_materializations(days.key, limit=100).records
        materialized = instance.get_materialized_partitions(days.key)
        seen = sorted((r.partition_key, r.asset_materialization.metadata["day"].value) for r in records)
    return seen, materialized, _index_rows(home)


def test_a_ranged_runs_events_stored_in_batches_read_as_those_stored_one_by_one(tmp_path, monkeypatch):
    # cost_pipeline sets DAGSTER_EVENT_BATCH_SIZE: a step's 10 materializations and the run's 10 planned
    # events then come to PooledSqliteEventLogStorage.store_event_batch, one transaction per database
    batched = _ranged_run(tmp_path / "batched", monkeypatch, "500")
    one_by_one = _ranged_run(tmp_path / "one_by_one", monkeypatch, "0")
    assert batched == one_by_one
    seen, materialized, index = batched
    assert seen == [(f"2026-01-{d:02d}", d) for d in range(1, 11)]
    assert materialized == {f"2026-01-{d:02d}" for d in range(1, 11)}
    assert [e for e, _, _ in index["events"]].count("ASSET_MATERIALIZATION") == 10
    assert [e for e, _, _ in index["events"]].count("ASSET_MATERIALIZATION_PLANNED") == 10
    # and Dagster's stock storage reads the batched home the same
    (tmp_path / "batched" / "dagster.yaml").unlink()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "batched"))
    with dg.DagsterInstance.get() as stock:
        assert type(stock.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert sorted((r.partition_key, r.asset_materialization.metadata["day"].value)
                      for r in stock.fetch_materializations(days.key, limit=100).records) == seen
        assert stock.get_materialized_partitions(days.key) == materialized
