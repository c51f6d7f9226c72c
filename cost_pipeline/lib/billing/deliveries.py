"""Which days a newly delivered or re-delivered billing file can change.

CUR 2.0 restates a whole billing period (``BILLING_PERIOD=YYYY-MM``) and legacy CUR a period folder
(``yyyymmdd-yyyymmdd``), so every day of that period is a candidate; for FOCUS and GCP files, and a
bare CUR folder, the candidates are the days the file itself holds. Candidates are then compared by
content fingerprint, so only days whose charges really changed are re-run.
"""

from __future__ import annotations

import datetime as dt
import re

from cost_pipeline.lib.billing.cur_legacy import _period_of, read_legacy_file
from cost_pipeline.lib.billing.focus import read_focus_file
from cost_pipeline.lib.billing.gcp import read_gcp_file
from cost_pipeline.lib.storage import Storage, StoredFile

_CUR2_PERIOD = re.compile(r"BILLING_PERIOD=(\d{4})-(\d{2})/")
_FILE_READERS = {"aws_cur_legacy": read_legacy_file, "focus": read_focus_file, "gcp_billing_export": read_gcp_file}
_DATA = (".csv", ".csv.gz", ".parquet", ".jsonl", ".json", ".ndjson", ".jsonl.gz")


def _days(start: dt.date, end: dt.date) -> set[dt.date]:
    return {start + dt.timedelta(days=i) for i in range((end - start).days)}


def affected_days(fmt: str, changed: list[StoredFile], storage: Storage) -> set[dt.date]:
    days: set[dt.date] = set()
    for f in changed:
        if fmt == "aws_cur2":
            match = _CUR2_PERIOD.search(f.name)
            if match:
                start = dt.date(int(match.group(1)), int(match.group(2)), 1)
                days |= _days(start, (start + dt.timedelta(days=32)).replace(day=1))
            continue
        if fmt == "aws_cur_legacy" and (period := _period_of(f.name)):
            days |= _days(period[0], period[1])
            continue
        if f.name.lower().endswith(_DATA):
            lines = _FILE_READERS[fmt](storage.fetch(f), "delivery", f.uri, f.name)
            days |= set(lines["date"].unique().to_list())
    return days
