"""Usage from a real Prometheus gives the same allocation as the equivalent extract files."""

import json

import dagster as dg
import polars as pl
import pytest
import yaml

from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.extracts import Extract, parse_query_range, stage_local_extracts, stitched_body
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
        files = query_range_day(url, "k8s_node_capacity", START, 5, 30, tmp_path / "stitched.json")
        assert [f.name for f in files] == ["stitched.json.part-000", "stitched.json.part-001"]
        stitched = json.loads(stitched_body(tuple(files), "live"))
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
    # every window's answer is checked as it arrives: one that is not a matrix answer is named, not archived
    (b'{"status": "success"}', 5, r"query 'up': not a matrix answer \(resultType None\)"),
    (b'{"status": "success", "data": {"resultType": "vector", "result": []}}', 5, "query 'up': not a matrix answer"),
    (b'{"status": "success", "data": {"resultType": "vector", "result": []}}', 3600, "query 'up': not a matrix answer"),
    (b'{"status": "success", "data": {"resultTy', 3600, "HTTP 200: not a Prometheus API response"),
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
        with pytest.raises(InputError, match=r"/api/v1/query_range: " + problem):
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


def test_a_day_in_windows_is_archived_window_by_window_and_staged_the_same_streamed_or_in_memory(tmp_path, sample_dir):
    """A 5 s step needs two windows a day: each is archived as Prometheus sent it, the day is reused from
    them once all are archived, and its series are stitched by label set whether streamed or in memory."""
    extracts = sample_dir / "usage" / f"date={START}"
    names = sorted(p.stem for p in extracts.glob("*.json"))
    runs = {}
    with prometheus_from_extracts(extracts, tmp_path) as url:
        for name, stream_mb in (("streamed", 0), ("in_memory", 100_000)):
            root = tmp_path / name
            root.mkdir()
            usage = {"prometheus_url": url, "step_seconds": 5, "queries": {n: n for n in names}, "stream_documents_above_mb": stream_mb}
            config = write_config(root, sample_dir, usage=usage)
            instance = dg.DagsterInstance.ephemeral()
            assert _run(config, instance, START, START).success
            runs[name] = config
            # the UI says how each query's answer was read: split as Prometheus wrote it, or in memory
            record = instance.fetch_materializations(dg.AssetKey("usage"), limit=1).records[0]
            read = record.event_log_entry.asset_materialization.metadata["extracts_read"].value
            assert read == {n: "split" if name == "streamed" else "in memory" for n in names}
    archive = tmp_path / "streamed" / "lake" / "usage_raw" / f"date={START}"
    assert sorted(p.name for p in archive.iterdir()) == sorted(f"{n}.json{end}" for n in names for end in (".part-000", ".part-001", ".parts"))
    # Prometheus writes its answers as the streamed path splits them (lib/compact_matrix.py), not for the converter
    from cost_pipeline.lib.compact_matrix import split_body

    for part in sorted(archive.glob("*.part-*")):
        assert split_body(part, tmp_path / "split.arrow", START) is not None, part.name

    def usage(root):
        day = f"date={START}"
        samples = pl.read_parquet(root / "lake" / "usage" / day / "part-0.parquet").drop("date").sort(pl.all())
        labels = pl.read_parquet(root / "lake" / "usage_series" / day / "part-0.parquet").drop("date").sort("query", "series")
        return samples, labels

    streamed, in_memory = usage(tmp_path / "streamed"), usage(tmp_path / "in_memory")
    assert streamed[0].equals(in_memory[0]) and streamed[1].equals(in_memory[1])
    # by hand: every sample of the extracts is in the stitched day at its own timestamp, with its labels
    labels = lambda metric: tuple(sorted((k, v) for k, v in metric.items() if k != "__name__"))  # noqa: E731
    for name in names:
        original = json.loads((extracts / f"{name}.json").read_text())["data"]["result"]
        mine = streamed[0].filter(pl.col("query") == name).join(streamed[1].filter(pl.col("query") == name), on=["query", "series"])
        got = {(tuple(sorted(r["labels"].items())), r["timestamp"], r["value"]) for r in mine.iter_rows(named=True)}
        assert {(labels(s["metric"]), float(t), float(v)) for s in original for t, v in s["values"]} <= got
        assert streamed[1].filter(pl.col("query") == name).height == len(original)  # one series per label set, not per window
    # Prometheus is gone: a rerun restages the day from the archived windows, identically
    assert _run(runs["streamed"], dg.DagsterInstance.ephemeral(), START, START).success
    again = usage(tmp_path / "streamed")
    assert again[0].equals(streamed[0]) and again[1].equals(streamed[1])


@pytest.mark.parametrize("stream_above", [0, 2**40])
def test_a_window_with_a_series_without_labels_is_named(tmp_path, stream_above):
    good = {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {"pod": "a"}, "values": [[1.0, "1"]]}]}}
    bad = {"status": "success", "data": {"resultType": "matrix", "result": [{"values": [[2.0, "1"]]}]}}
    files = []
    for i, body in enumerate((good, bad)):
        files.append(tmp_path / f"q.json.part-00{i}")
        files[-1].write_text(json.dumps(body))
    extract = Extract("q", files[0], "lake/usage_raw/q.json", sum(f.stat().st_size for f in files), tuple(files))
    with pytest.raises(InputError, match=r"lake/usage_raw/q.json: q.json.part-001: not a matrix answer \(KeyError: 'metric'\)"):
        stage_local_extracts([extract], START, tmp_path / "work", stream_above)
    assert list((tmp_path / "work").iterdir()) == []
