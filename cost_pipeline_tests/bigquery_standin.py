"""A local stand-in for the BigQuery REST API, enough for ``client.query(...).to_arrow()``.

It does not run SQL: it serves the given billing-export rows whose ``usage_start_time`` falls on the
``@day`` query parameter, in BigQuery's f/v row encoding, so google-cloud-bigquery's real request
building, paging and type conversion (RECORD, REPEATED, TIMESTAMP) are exercised offline. A query
with an ``@since`` parameter gets what the sensor's query asks for: per usage day, the newest
``export_time`` and the number of rows exported after ``@since``. ``rows`` may grow while it runs
(rows that GCP exports later).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

S, F, T = "STRING", "FLOAT", "TIMESTAMP"


def _record(name, fields, mode="NULLABLE"):
    return {"name": name, "type": "RECORD", "mode": mode, "fields": fields}


def _f(name, kind=S):
    return {"name": name, "type": kind, "mode": "NULLABLE"}


KV = [_f("key"), _f("value")]
SCHEMA = {"fields": [
    _f("billing_account_id"), _record("service", [_f("id"), _f("description")]), _record("sku", [_f("id"), _f("description")]),
    _f("usage_start_time", T), _f("usage_end_time", T),
    _record("project", [_f("id"), _f("number"), _f("name"), _record("labels", KV, "REPEATED")]),
    _record("labels", KV, "REPEATED"), _record("location", [_f("location"), _f("country"), _f("region"), _f("zone")]),
    _record("resource", [_f("name"), _f("global_name")]), _f("cost", F), _f("currency"), _f("cost_type"),
    _record("usage", [_f("amount", F), _f("unit")]),
    _record("credits", [_f("name"), _f("amount", F), _f("type"), _f("id"), _f("full_name")], "REPEATED"),
    _record("invoice", [_f("month")]), _f("cost_at_list", F), _f("export_time", T),
]}
CHANGED_SCHEMA = {"fields": [_f("day", "DATE"), _f("newest_export", T), _f("new_rows", "INTEGER")]}


def _moment(text: str) -> dt.datetime:
    return dt.datetime.strptime(text.replace(" UTC", ""), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)


def _encode(value, field):
    if value is None:
        return {"v": None}
    if field.get("mode") == "REPEATED":
        return {"v": [_encode(v, {**field, "mode": "NULLABLE"}) for v in value]}
    if field["type"] == "RECORD":
        return {"v": {"f": [_encode(value.get(f["name"]), f) for f in field["fields"]]}}
    if field["type"] == T:
        moment = value if isinstance(value, dt.datetime) else _moment(value)
        return {"v": str(int(moment.timestamp() * 1_000_000))}
    return {"v": str(value)}


def _row(row, schema=SCHEMA):
    return {"f": [_encode(row.get(f["name"]), f) for f in schema["fields"]]}


@contextmanager
def bigquery_standin(rows: list[dict], project: str = "billing-project", without: tuple[str, ...] = (), missing_table: bool = False):
    """A BigQuery REST endpoint holding the export table ``rows`` (its schema less the ``without`` columns;
    ``missing_table``: none, as when the table name is wrong)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    state: dict = {"queries": [], "pages": []}
    table_schema = {"fields": [f for f in SCHEMA["fields"] if f["name"] not in without]}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, body: dict, status: int = 200):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _job(self):
            return {
                "kind": "bigquery#job", "id": f"{project}:US.job-1",
                "jobReference": {"projectId": project, "jobId": "job-1", "location": "US"},
                "status": {"state": "DONE"},
                "configuration": {"query": {"query": state.get("sql", ""), "destinationTable": {"projectId": project, "datasetId": "_anon", "tableId": "result"}}},
                "statistics": {"creationTime": "1", "startTime": "1", "endTime": "2"},
            }

        def _result(self):
            if state.get("since"):
                since = dt.datetime.fromisoformat(state["since"].replace(" ", "T"))
                since = since if since.tzinfo else since.replace(tzinfo=dt.UTC)
                days: dict[str, dict] = {}
                for r in rows:
                    exported = _moment(r["export_time"])
                    if exported > since:
                        entry = days.setdefault(r["usage_start_time"][:10], {"new_rows": 0, "newest_export": exported})
                        entry["new_rows"] += 1
                        entry["newest_export"] = max(entry["newest_export"], exported)
                return CHANGED_SCHEMA, [_row({"day": d, **v}, CHANGED_SCHEMA) for d, v in sorted(days.items())]
            day = state.get("day")
            return table_schema, [_row(r, table_schema) for r in rows if day is None or r["usage_start_time"].startswith(day)]

        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            query = body.get("configuration", {}).get("query", {})
            state["sql"] = query.get("query", "")
            state["queries"].append(state["sql"])
            params = {p["name"]: p["parameterValue"]["value"] for p in query.get("queryParameters", [])}
            state["day"] = params.get("day")
            state["since"] = params.get("since")
            self._send(self._job())

        def _page(self, result: list) -> dict:
            """``maxResults`` rows from ``pageToken`` on (the row offset), and the next page's token."""
            query = parse_qs(urlparse(self.path).query)
            start = int(query.get("pageToken", ["0"])[0])
            size = int(query.get("maxResults", [str(len(result) or 1)])[0])
            state["pages"].append(size)
            page = {"totalRows": str(len(result)), "rows": result[start:start + size]}
            return page | ({"pageToken": str(start + size)} if start + size < len(result) else {})

        def do_GET(self):  # noqa: N802
            path = urlparse(self.path).path
            if "/queries/" in path:
                schema, result = self._result()
                return self._send({"kind": "bigquery#getQueryResultsResponse", "jobReference": self._job()["jobReference"],
                                   "jobComplete": True, "schema": schema, **self._page(result)})
            if path.endswith("/data"):
                _, result = self._result()
                return self._send({"kind": "bigquery#tableDataList", **self._page(result)})
            if "/tables/" in path:
                if missing_table:
                    return self._send({"error": {"code": 404, "message": f"Not found: Table {path.rsplit('/', 1)[-1]}"}}, 404)
                schema, result = self._result()
                return self._send({"kind": "bigquery#table", "schema": schema, "numRows": str(len(result)),
                                   "tableReference": {"projectId": project, "datasetId": "_anon", "tableId": "result"}})
            if "/jobs/" in path:
                return self._send(self._job())
            self._send({"error": {"code": 404, "message": path}}, 404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = bigquery.Client(project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
        yield client, state
    finally:
        server.shutdown()
        server.server_close()
