"""Dagster's SQLite storage with the event log's connections kept open between events.

Dagster's stock SQLite event log creates an engine, opens, commits and closes a connection for every
event, and again for the cross-run index when the event is about an asset. Closing the last
connection to a WAL database checkpoints it and deletes its WAL, so each event paid a new engine
(its statements compiled again), ~14 fsyncs and the re-creation of two WAL files: ~17 ms an event
alone and 20-30 ms during a backfill on this machine, where a day writes 24 asset events (9
materializations, 9 planned, 6 check results): ~0.5 s a day of a 365-day backfill (~3 min).

Here each database keeps one engine with one pooled connection (the index and the most recently
written runs), so statements are compiled once and the WAL stays; connections use
``synchronous=NORMAL``, SQLite's recommended setting for WAL (a commit is durable at the next
checkpoint, the database cannot be corrupted by a crash): ~3.5 ms an event. Same files and schema
as the stock storage, so a home written by either is read by the other (``dagster dev`` without
this ``dagster.yaml``, older runs). Enabled by ``deployments/local/dagster.yaml``::

    storage:
      custom:
        module: cost_pipeline.instance.sqlite_storage
        class: PooledSqliteStorage
        config:
          base_dir: {env: DAGSTER_HOME}
"""

from __future__ import annotations

import atexit
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import QueuePool

# databases whose connection stays open: the index and the runs written last (a webserver or daemon
# living for months touches thousands of runs; each closed engine is re-created on its next event)
OPEN_DATABASES = 8


def _wal_normal(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    try:
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":  # Dagster creates its event databases in WAL
            cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """:class:`SqliteEventLogStorage` whose databases keep an engine and one connection each."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._pid = os.getpid()
        super().__init__(base_dir, inst_data)
        # closed at exit (the CLI never disposes its instance): the last connection checkpoints each WAL
        # into its database and removes it, as the stock storage leaves the files
        atexit.register(self._close_engines, 5.0)

    def _engine(self, shard: str) -> Engine:
        if os.getpid() != self._pid:  # a forked child: the parent's connections are not its own to use or close
            self._engines, self._pid = OrderedDict(), os.getpid()
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = create_engine(self.conn_string_for_shard(shard), poolclass=QueuePool, pool_size=1, max_overflow=2,
                                   connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False})
            event.listen(engine, "connect", _wal_normal)
        self._engines[shard] = engine  # the most recent last
        while len(self._engines) > OPEN_DATABASES:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator:
        with self._db_lock:  # as the stock storage: one thread at a time (the run and the log watcher)
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
                engine.dispose()  # a new database is WAL only now: its next connection gets synchronous=NORMAL
            with engine.connect() as conn, conn.begin():
                yield conn

    def _close_engines(self, wait: float = -1) -> None:
        """``wait``: at exit, a thread still inside a query (a log watcher) gets that long, then the
        connections are left to SQLite, which recovers a WAL on the next open."""
        if not self._db_lock.acquire(timeout=wait):
            return
        try:
            if os.getpid() == self._pid:
                for engine in self._engines.values():
                    engine.dispose()
            self._engines.clear()
        finally:
            self._db_lock.release()

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A batch of events (with ``DAGSTER_EVENT_BATCH_SIZE`` set, see ``cost_pipeline/__init__.py``:
        a step's materializations of a ranged run, the run's planned events), each stored as
        :meth:`store_event` stores it and in the same order, but each run of consecutive asset events
        in one transaction per database (the stock SQLite storage stores a batch event by event, a
        transaction each)."""
        together: list[EventLogEntry] = []
        for entry in events:
            if together and entry.run_id != together[0].run_id:
                self._store_asset_events(together)
                together = []
            if entry.is_dagster_event and entry.dagster_event_type in ASSET_EVENTS:
                together.append(entry)
                continue
            self._store_asset_events(together)
            together = []
            self.store_event(entry)
        self._store_asset_events(together)

    def _store_asset_events(self, events: list[EventLogEntry]) -> None:
        if not events:
            return
        statements = [self.prepare_insert_event(entry) for entry in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                conn.execute(statement)
        with self.index_transaction() as conn:  # mirrored in the cross-run index, as store_event does
            ids = []
            for statement in statements:
                with db_result(conn, statement) as result:
                    ids.append(result.inserted_primary_key[0])
            if any(event_id is None for event_id in ids):
                raise DagsterInvariantViolationError("Cannot store asset event tags for null event id.")
            self._store_asset_event_tags(conn, events, ids)
            for entry, event_id in zip(events, ids):
                self._store_asset_event(conn, entry, event_id)

    def dispose(self) -> None:
        self._close_engines()
        super().dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, schedules as is) with :class:`PooledSqliteEventLogStorage`."""

    def __init__(self, base_dir: str, inst_data=None):
        super().__init__(base_dir, inst_data)
        # the stock event log built above holds no connection between calls: replaced before any is made
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
