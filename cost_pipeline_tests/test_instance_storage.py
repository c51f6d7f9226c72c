"""The pooled SQLite event log (``cost_pipeline/instance/sqlite_storage.py``) of the local instance config."""

import os
import shutil
from pathlib import Path

import dagster as dg

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
