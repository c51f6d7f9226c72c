"""Closing a month: freeze its statements, then write their final files (CLI and Dagster job share this)."""

from __future__ import annotations

import datetime as dt

from cost_pipeline.config import Settings
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.report_outputs import statement_files
from cost_pipeline.lib.statements import StatementError, close


def close_month(lake: Lake, settings: Settings, month: str, allow_missing_days: bool = False, now: dt.datetime | None = None) -> list[str]:
    """Every day of the month from the first partition to yesterday (UTC) must be in the lake, unless
    ``allow_missing_days``; returns the statement files written."""
    try:
        first = dt.date.fromisoformat(month + "-01")
    except ValueError:
        raise StatementError(f"month must be YYYY-MM, got {month!r}") from None
    now = now or dt.datetime.now(dt.timezone.utc)
    days = [first + dt.timedelta(days=i) for i in range(31) if (first + dt.timedelta(days=i)).month == first.month]
    expected = [] if allow_missing_days else [d for d in days if settings.partitions_start_date <= d < now.date()]
    if not lake.days("team_cost_detail"):
        raise StatementError("the lake has no team_cost_detail yet; materialize the daily assets first")
    detail = lake.scan("team_cost_detail").collect()
    close(lake, month, detail, expected, now)
    result = statement_files(lake, detail, settings, only=month)
    written = []
    for path, body in result.files.items():
        folder, _, name = path.rpartition("/")
        written.append(lake.write_file(folder, None, name, body))
    return written
