"""Usage from a real Prometheus gives the same allocation as the equivalent extract files."""

import json

import dagster as dg
import polars as pl
import pytest
import yaml

from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.extracts import parse_query_range
from cost_pipeline.lib.prometheus import MAX_POINTS, query_range_day, windows
from cost_pipeline_tests.conftest import START, write_config
from cost_pipeline_tests.prometheus_server import prometheus_from_extracts
from cost_pipeline_tests.test_assets import _run


def test_windows_respect_the_point_limit_and_cover_the_day():
    for step in (1, 5, 60, 3600):
        spans = windows(START, step)
        points = [int((end - start) / step) + 1 for start, end in spans]
        assert max(points) <= MAX_POINTS and sum(points) == 86400 // step
        assert all(b[0] - a[1] == step for a, b in zip(spans, spans[1:]))
    assert len(windows(START, 5)) == 2


def test_live_prometheus_allocation_equals_extract_allocation(tmp_path, sample_dir):
    extracts = sample_dir / "usage" / f"date={START}"
    with prometheus_from_extracts(extracts, tmp_path) as url:
        # a day at a 5 s step needs two query windows; the stitched series must hold the hourly samples
        query_range_day(url, "k8s_node_capacity", START, 5, 30, tmp_path / "stitched.json")
        stitched = json.loads((tmp_path / "stitched.json").read_text())
        original = json.loads((extracts / "k8s_node_capacity.json").read_text())
        for series in stitched["data"]["result"]:
            ts = [p[0] for p in series["values"]]
            assert len(ts) == len(set(ts))
        hourly = parse_query_range(stitched, "q", START, "live").filter(pl.col("timestamp") % 3600 == 0)
        assert hourly.height == sum(len(s["values"]) for s in original["data"]["result"])
        # Prometheus' own error, named with the endpoint and the query
        with pytest.raises(InputError, match=r"/api/v1/query_range: query 'sum\(' failed: bad_data: .*parse error"):
            query_range_day(url, "sum(", START, 3600, 30, tmp_path / "bad.json")

        live_dir, file_dir = tmp_path / "live", tmp_path / "files"
        live_dir.mkdir(), file_dir.mkdir()
        raw = yaml.safe_load(write_config(file_dir, sample_dir).read_text())
        names = [p.stem for p in extracts.glob("*.json")]
        # every answer parsed while streaming (the extract files of the other run: in memory)
        usage = {"prometheus_url": url, "step_seconds": 3600, "queries": {n: n for n in names}, "stream_documents_above_mb": 0}
        live = write_config(live_dir, sample_dir, usage=usage, tagging=raw["tagging"], allocation=raw["allocation"])
        assert _run(live, dg.DagsterInstance.ephemeral(), START, START).success
    assert _run(file_dir / "config.yaml", dg.DagsterInstance.ephemeral(), START, START).success

    def allocation(root):
        frame = pl.read_parquet(root / "lake" / "allocated_costs" / f"date={START}" / "part-0.parquet")
        return frame.drop("rules_version").sort(pl.all(), nulls_last=True)

    from_live, from_files = allocation(live_dir), allocation(file_dir)
    assert from_live.filter(pl.col("allocation") == "shared").height > 10
    assert from_live.equals(from_files)
    archived = sorted(p.name for p in (live_dir / "lake" / "usage_raw" / f"date={START}").iterdir())
    assert archived == sorted(f"{n}.json" for n in names)
    # the archive is Prometheus' own answer: the extract's series and samples, in its own number formatting
    answer = json.loads((live_dir / "lake" / "usage_raw" / f"date={START}" / "k8s_requests.json").read_bytes())
    labels = lambda metric: json.dumps({k: v for k, v in metric.items() if k != "__name__"}, sort_keys=True)  # noqa: E731
    samples = lambda body: sorted((labels(s["metric"]), float(t), float(v)) for s in body["data"]["result"] for t, v in s["values"])  # noqa: E731
    assert samples(answer) == samples(json.loads((extracts / "k8s_requests.json").read_text()))

    # Prometheus is gone now: a rerun recomputes the day from the archived responses, identically
    assert _run(live, dg.DagsterInstance.ephemeral(), START, START).success
    assert allocation(live_dir).equals(from_live)


@pytest.mark.parametrize("body, step, problem", [
    (b"<html>a login page</html>", 3600, "HTTP 200: not a Prometheus API response"),
    (b'{"status": "error", "errorType": "bad_data", "error": "parse error"}', 3600, "query 'up' failed: bad_data: parse error"),
    # a day in two windows is stitched from the bodies: one that is not a matrix answer is named, not a traceback
    (b'{"status": "success"}', 5, "query 'up': not a matrix answer"),
    (b'{"status": "success", "data": {"resultType": "matrix", "result": [{"values": []}]}}', 5, "query 'up': not a matrix answer"),
])
def test_a_server_that_is_not_prometheus_is_named(tmp_path, body, step, problem):
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(InputError, match=r"/api/v1/query_range: " + problem.replace("(", r"\(")):
            query_range_day(url, "up", START, step, 5, tmp_path / "up.json")
    finally:
        server.shutdown()


def test_an_unreachable_prometheus_is_named(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(InputError, match=f"127.0.0.1:{closed}/api/v1/query_range: cannot reach Prometheus"):
        query_range_day(f"http://127.0.0.1:{closed}", "up", START, 3600, 5, tmp_path / "up.json")
