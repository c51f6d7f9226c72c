"""Prometheus query_range extracts: parsed column-wise, counted sample for sample, bad input named."""

import datetime as dt
import json

import polars as pl
import pytest

from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.usage import parse_query_range

DAY = dt.date(2026, 9, 2)
T0 = dt.datetime(2026, 9, 2, tzinfo=dt.UTC).timestamp()


def test_samples_labels_and_the_day_window_are_exact():
    body = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "kube_pod_container_resource_requests", "namespace": "a", "pod": "p-1"},
         "values": [[T0 - 300, "9"], [T0, "1.5"], [T0 + 300, "NaN"], [T0 + 600, "+Inf"], [T0 + 86100, "2"], [T0 + 86400, "7"]]},
        {"metric": {"namespace": "b"}, "values": [[T0 + 300, "4e2"]]},
    ]}}
    samples = parse_query_range(json.dumps(body).encode(), "k8s_requests", DAY, "x.json")
    # kept: T0 (1.5), T0+86100 (2) of series 0 and the one of series 1; outside the day, NaN, Inf dropped
    assert samples.select("series", "timestamp", "value").rows() == [(0, T0, 1.5), (0, T0 + 86100, 2.0), (1, T0 + 300, 400.0)]
    labels = samples["labels"].cast(pl.List(pl.Struct({"key": pl.String, "value": pl.String}))).to_list()
    assert labels[0] == [{"key": "namespace", "value": "a"}, {"key": "pod", "value": "p-1"}]  # __name__ dropped
    assert labels[2] == [{"key": "namespace", "value": "b"}]
    assert set(samples["query"]) == {"k8s_requests"} and set(samples["date"]) == {DAY}


def test_many_pods_at_five_minute_steps_count_every_sample():
    pods, steps = 500, 288
    body = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"pod": f"p-{i}", "namespace": f"ns-{i % 7}"}, "values": [[T0 + 300 * s, str(i + s)] for s in range(steps)]}
        for i in range(pods)]}}
    samples = parse_query_range(body, "q", DAY, "x")
    assert samples.height == pods * steps
    assert samples["value"].sum() == sum(i + s for i in range(pods) for s in range(steps))


@pytest.mark.parametrize("body, problem", [
    (b"{not json", "not a JSON object"),
    (json.dumps({"status": "error", "error": "query timed out"}).encode(), "Prometheus status 'error': query timed out"),
    (json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode(), "expected resultType 'matrix'"),
    (json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"a": "b"}, "values": [[T0, "1"], [T0 + 60, "one"]]}]}}).encode(), "series 0: bad sample"),
])
def test_bad_extracts_name_the_file_and_problem(body, problem):
    with pytest.raises(InputError, match="x.json: " + problem.replace("(", r"\(").replace(")", r"\)")):
        parse_query_range(body, "q", DAY, "x.json")


def test_an_empty_result_is_no_samples():
    body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}})
    assert parse_query_range(body, "q", DAY, "x").height == 0


def test_the_lake_keeps_labels_once_per_series_and_reads_them_back_on_every_sample(tmp_path):
    from cost_pipeline.lib.lake import Lake
    from cost_pipeline.lib.usage import query_series, read_extracts_parts, read_usage

    folder = tmp_path / "usage" / f"date={DAY}"
    folder.mkdir(parents=True)
    pods = [{"namespace": f"ns-{i % 3}", "pod": f"p-{i}", "resource": "cpu"} for i in range(50)]
    body = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": m, "values": [[T0 + 300 * k, str(i + k)] for k in range(288)]} for i, m in enumerate(pods)]}}
    (folder / "k8s_requests.json").write_text(json.dumps(body))
    (folder / "k8s_cpu_usage.json").write_text(json.dumps({**body, "data": {**body["data"], "result": body["data"]["result"][:7]}}))
    points, series = read_extracts_parts(tmp_path / "usage", DAY)
    assert "labels" not in points.columns and points.height == 50 * 288 + 7 * 288
    assert series.height == 50 + 7  # one row of labels per series
    lake = Lake.from_uri(str(tmp_path / "lake"))
    lake.write_day("usage", DAY, points)
    lake.write_day("usage_series", DAY, series)
    usage = read_usage(lake, [DAY])
    assert usage.points.height == points.height and usage.series.height == 57
    requests = query_series(usage, "k8s_requests", ["pod", "namespace"])
    assert requests.height == 50 * 288
    pod_17 = requests.filter(pl.col("pod") == "p-17")
    assert pod_17.height == 288 and pod_17["value"].sum() == sum(17 + k for k in range(288))
    assert set(pod_17["namespace"]) == {"ns-2"}
    # the same from samples carrying their labels (what older lakes hold)
    assert query_series(parse_query_range(json.dumps(body), "k8s_requests", DAY, "x"), "k8s_requests", ["pod", "namespace"]).sort(
        "series", "timestamp").equals(requests.sort("series", "timestamp"))
