"""Prometheus query_range extracts: parsed column-wise, counted sample for sample, bad input named."""

import datetime as dt
import json

import polars as pl
import pytest

from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.extracts import parse_query_range

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


BAD_BODIES = [
    (b"{not json", "not a JSON object"),
    (json.dumps({"status": "error", "error": "query timed out"}).encode(), "Prometheus status 'error': query timed out"),
    (json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode(), "expected resultType 'matrix'"),
    (json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"a": "b"}, "values": [[T0, "1"], [T0 + 60, "one"]]}]}}).encode(), "series 0: bad sample"),
    (json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"a": "b"}, "values": "none"}]}}).encode(), "a series' values must be"),
]


@pytest.mark.parametrize("body, problem", BAD_BODIES)
def test_bad_extracts_name_the_file_and_problem(body, problem):
    with pytest.raises(InputError, match="x.json: " + problem.replace("(", r"\(").replace(")", r"\)")):
        parse_query_range(body, "q", DAY, "x.json")


def test_an_empty_result_is_no_samples():
    body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}})
    assert parse_query_range(body, "q", DAY, "x").height == 0


def test_the_lake_keeps_labels_once_per_series_and_reads_them_back_on_every_sample(tmp_path):
    from cost_pipeline.lib.extracts import read_extracts_parts
    from cost_pipeline.lib.lake import Lake
    from cost_pipeline.lib.usage import HELD_BELOW, query_series, query_sums, read_usage

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
    assert isinstance(usage.points, pl.DataFrame)  # a small day is read once for every driver
    assert usage.points.height == points.height and usage.series.height == 57 and not usage.is_empty()
    # a large day stays a scan: each query is read when a driver asks for it
    large = DAY + dt.timedelta(days=1)
    many = pl.DataFrame({"date": [large], "query": ["k8s_requests"], "series": [0], "timestamp": [float(T0)], "value": [1.0]},
                        schema=points.schema).select(pl.all().repeat_by(HELD_BELOW).explode())
    lake.write_day("usage", large, many)
    lake.write_day("usage_series", large, series.head(1).with_columns(date=pl.lit(large)))
    held_not = read_usage(lake, [large])
    assert isinstance(held_not.points, pl.LazyFrame)
    assert query_sums(held_not, "k8s_requests", ["namespace"])["value"].to_list() == [float(HELD_BELOW)]
    requests = query_series(usage, "k8s_requests", ["pod", "namespace"])
    assert requests.height == 50 * 288
    pod_17 = requests.filter(pl.col("pod") == "p-17")
    assert pod_17.height == 288 and pod_17["value"].sum() == sum(17 + k for k in range(288))
    assert set(pod_17["namespace"]) == {"ns-2"}
    # summed per namespace and step while streaming (what the Kubernetes driver reads), against sums by hand
    sums = query_sums(usage, "k8s_requests", ["namespace", "timestamp"])
    by_hand = {}
    for i, m in enumerate(pods):
        for k in range(288):
            by_hand[(m["namespace"], T0 + 300 * k)] = by_hand.get((m["namespace"], T0 + 300 * k), 0) + i + k
    assert {(n, t): v for n, t, v in sums.select("namespace", "timestamp", "value").iter_rows()} == by_hand
    # the same from samples carrying their labels (what older lakes hold)
    assert query_series(parse_query_range(json.dumps(body), "k8s_requests", DAY, "x"), "k8s_requests", ["pod", "namespace"]).sort(
        "series", "timestamp").equals(requests.sort("series", "timestamp"))


def _lines(body: dict) -> bytes:  # what `jq -c '.data.result[]'` makes of a query_range body
    return "".join(json.dumps(s) + "\n" for s in body["data"]["result"]).encode()


def test_an_extract_as_one_series_per_line_gives_the_same_samples(tmp_path):
    from cost_pipeline.lib.extracts import read_extracts_parts

    pods, steps = 300, 288
    body = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "m", "pod": f"p-{i}", "namespace": f"ns-{i % 7}", **({"gpu": "a100"} if i % 50 == 0 else {})},
         "values": [[T0 - 300 + 300 * s, str(i + s)] for s in range(steps)] + [[T0 + 600, "NaN"]]}
        for i in range(pods)]}}
    folder = tmp_path / f"date={DAY}"
    folder.mkdir()
    (folder / "requests.json").write_text(json.dumps(body))
    (folder / "usage.ndjson").write_bytes(_lines(body))
    points, series = read_extracts_parts(str(tmp_path), DAY)
    # by hand: each series' samples inside the day (the first step is the day before; NaN dropped)
    in_day = sum(1 for s in body["data"]["result"] for t, v in s["values"] if T0 <= t < T0 + 86400 and v != "NaN")
    total = sum(float(v) for s in body["data"]["result"] for t, v in s["values"] if T0 <= t < T0 + 86400 and v != "NaN")
    for query in ("requests", "usage"):
        mine = points.filter(pl.col("query") == query)
        assert mine.height == in_day and mine["value"].sum() == total
        assert series.filter(pl.col("query") == query).height == pods
    same = [frame.filter(pl.col("query") == q).drop("query") for frame in (points, series) for q in ("requests", "usage")]
    assert same[0].equals(same[1]) and same[2].equals(same[3])  # samples, then labels (the extra label included)


@pytest.mark.parametrize("stream_above", [0, 2**40])
@pytest.mark.parametrize("text, problem", [
    ('{"metric": {"pod": "a"}, "values": [[1, "1"]]}\n{"metric": {"pod": "b"}, "val', "not one JSON object per line"),
    ('{"metric": {"pod": "a"}}\n', r"each line is a series with 'metric' and 'values'; missing \['values'\]"),
    ('{"metric": {"pod": "a"}, "values": [[%d, "one"]]}\n' % T0, "series 0: bad sample"),
    ('{"metric": {"pod": "a"}, "values": "x"}\n', r"a series' values must be \[\[timestamp"),
    ('{"metric": {"pod": "a"}, "values": [%d, "1"]}\n' % T0, r"a series' values must be \[\[timestamp"),
    ('{"metric": "a", "values": [[%d, "1"]]}\n' % T0, "a series' metric must be an object of labels"),
])
def test_bad_series_lines_name_the_file_and_problem(tmp_path, text, problem, stream_above):
    folder = tmp_path / "usage" / f"date={DAY}"
    folder.mkdir(parents=True)
    (folder / "q.ndjson").write_text(text)
    with pytest.raises(InputError, match=f"{folder / 'q.ndjson'}: {problem}"):
        _staged(tmp_path / "usage", stream_above)
    assert [p.name for p in (tmp_path / f"work-{stream_above}").iterdir()] == []  # no half-written samples or lines left


def test_one_query_in_two_forms_is_refused_naming_both(tmp_path):
    from cost_pipeline.lib.extracts import read_extracts_parts

    folder = tmp_path / f"date={DAY}"
    folder.mkdir()
    body = {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {"pod": "a"}, "values": [[T0, "1"]]}]}}
    (folder / "q.json").write_text(json.dumps(body))
    (folder / "q.ndjson").write_bytes(_lines(body))
    with pytest.raises(InputError, match="q.json and .*q.ndjson: two extracts of query 'q'"):
        read_extracts_parts(str(tmp_path), DAY)


def test_extracts_are_staged_one_file_each_and_the_day_is_a_scan_of_them(tmp_path):
    """What the usage asset does: each extract's samples are written under a work folder as soon as it
    is parsed (here the series-per-line one while streaming), and the lake's day is sunk from a scan of them."""
    from cost_pipeline.lib.extracts import stage_extracts
    from cost_pipeline.lib.lake import Lake

    series = [{"metric": {"pod": f"p-{i}", "namespace": f"ns-{i % 4}"}, "values": [[T0 + 300 * k, str(i * k)] for k in range(288)]}
              for i in range(600)]
    folder = tmp_path / "usage" / f"date={DAY}"
    folder.mkdir(parents=True)
    (folder / "usage.ndjson").write_bytes(_lines({"data": {"result": series}}))
    (folder / "requests.json").write_text(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": series[:10]}}))
    points, labels = stage_extracts(str(tmp_path / "usage"), DAY, tmp_path / "work", stream_above=100_000)
    assert isinstance(points, pl.LazyFrame)
    staged = {p.name: pl.read_parquet(p).height for p in (tmp_path / "work").iterdir()}
    assert staged == {"usage.parquet": 600 * 288, "requests.parquet": 10 * 288}
    lake = Lake.from_uri(str(tmp_path / "lake"))
    with lake.staging("usage") as staging:
        staging.write_day(DAY, points)
    day = lake.scan_days("usage", [DAY]).collect()
    by_hand = sum(i * k for i in range(600) for k in range(288)) + sum(i * k for i in range(10) for k in range(288))
    assert day.height == 610 * 288 and day["value"].sum() == by_hand
    pod_599 = labels.filter(pl.col("query") == "usage", pl.col("series") == 599)["labels"].to_list()
    assert pod_599 == [{"namespace": "ns-3", "pod": "p-599"}]
    assert day.filter(pl.col("query") == "usage", pl.col("series") == 599)["value"].sum() == sum(599 * k for k in range(288))


def test_a_bad_sample_deep_in_a_streamed_extract_names_its_series(tmp_path):
    folder = tmp_path / "usage" / f"date={DAY}"
    folder.mkdir(parents=True)
    lines = [{"metric": {"pod": f"p-{i}"}, "values": [[T0 + 300 * k, "1"] for k in range(100)]} for i in range(600)]
    lines[499]["values"][57] = [T0, "lots"]
    (folder / "q.ndjson").write_bytes(_lines({"data": {"result": lines}}))
    with pytest.raises(InputError, match=rf"{folder / 'q.ndjson'}: series 499: bad sample \['{int(T0)}', 'lots'\]"):
        _staged(tmp_path / "usage", 0)


def test_query_names_never_collide_with_the_readers_own_files(tmp_path):
    """An extract named like a work file of another query's reader (``x.bad``) keeps its samples."""
    from cost_pipeline.lib.extracts import read_extracts_parts

    folder = tmp_path / f"date={DAY}"
    folder.mkdir()
    (folder / "x.ndjson").write_text(json.dumps({"metric": {"a": "1"}, "values": [[T0, "1"]]}) + "\n")
    body = {"status": "success", "data": {"resultType": "matrix", "result": [{"metric": {"a": "2"}, "values": [[T0, "5"], [T0 + 300, "6"]]}]}}
    (folder / "x.bad.json").write_text(json.dumps(body))
    points, series = read_extracts_parts(str(tmp_path), DAY)
    assert dict(points.group_by("query").agg(pl.col("value").sum()).iter_rows()) == {"x": 1.0, "x.bad": 11.0}
    assert series.height == 2


def _staged(root, stream_above: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    from cost_pipeline.lib.extracts import stage_extracts

    work = root.parent / f"work-{stream_above}"
    points, series = stage_extracts(str(root), DAY, work, stream_above=stream_above)
    return points.collect().sort("query", "series", "timestamp"), series.sort("query", "series")


def test_a_large_document_is_streamed_into_the_same_samples_and_labels(tmp_path):
    """Documents above the size limit are parsed while streaming (one series in memory at a time); every
    sample and label is the one the in-memory reader gives, counted against the body by hand."""
    hostile = ['a "quoted" value', "line\nbreak", '{"metric":{"x":"y"}}', "naïve ☃", "back\\slash", ""]
    result = [{"metric": {"__name__": "m", "pod": f"p-{i}", "namespace": hostile[i % len(hostile)], **({"gpu": "a100"} if i % 40 == 0 else {})},
               "values": [[int(T0) - 300 + 300 * s if s % 2 else T0 - 300.25 + 300 * s, str(i * s / 4)] for s in range(290)] + [[T0 + 7, "NaN"]]}
              for i in range(200)]
    folder = tmp_path / "usage" / f"date={DAY}"
    folder.mkdir(parents=True)
    body = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    (folder / "requests.json").write_text(json.dumps(body))
    # the same body with its keys in another order than Prometheus writes them
    (folder / "reordered.json").write_text(json.dumps({"data": {"result": result[:30], "resultType": "matrix"}, "status": "success"}))
    (folder / "empty.json").write_text(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}))
    in_memory, streamed = _staged(tmp_path / "usage", 2**40), _staged(tmp_path / "usage", 0)
    assert set(streamed[0]["query"]) == {"requests", "reordered"} and set(streamed[1]["query"]) == {"requests", "reordered"}
    in_day = [(float(t), float(v)) for s in result for t, v in s["values"] if T0 <= t < T0 + 86400 and v != "NaN"]
    mine = streamed[0].filter(pl.col("query") == "requests")
    assert mine.height == len(in_day) and mine["value"].sum() == sum(v for _, v in in_day)
    assert streamed[0].filter(pl.col("query") == "reordered").height == sum(
        1 for s in result[:30] for t, v in s["values"] if T0 <= t < T0 + 86400 and v != "NaN")
    assert streamed[0].equals(in_memory[0]) and streamed[1].equals(in_memory[1])
    labels = streamed[1].filter(pl.col("query") == "requests")["labels"].to_list()
    assert labels[0] == {"gpu": "a100", "namespace": hostile[0], "pod": "p-0"}  # __name__ dropped
    assert [row["namespace"] for row in labels[:6]] == hostile
    # and the streaming path itself gave them (not the in-memory fallback it takes for odd input)
    from cost_pipeline.lib.extracts import convert_document, sink_series_lines

    lines = convert_document(folder / "requests.json", tmp_path / "requests.lines")
    assert lines is not None and len(lines.read_bytes().splitlines()) == len(result)
    labels, staged = sink_series_lines([lines], "requests", DAY, tmp_path / "requests.parquet")
    assert staged == tmp_path / "requests.parquet" and pl.read_parquet(staged).sort("series", "timestamp").equals(in_memory[0].filter(pl.col("query") == "requests"))
    assert labels.sort("series").equals(in_memory[1].filter(pl.col("query") == "requests"))


@pytest.mark.parametrize("body, problem", BAD_BODIES)
def test_a_bad_streamed_document_names_the_file_and_problem(tmp_path, body, problem):
    folder = tmp_path / "usage" / f"date={DAY}"
    folder.mkdir(parents=True)
    (folder / "q.json").write_bytes(body)
    with pytest.raises(InputError, match=f"{folder / 'q.json'}: " + problem.replace("(", r"\(").replace(")", r"\)")):
        _staged(tmp_path / "usage", 0)
    assert [p.name for p in (tmp_path / "work-0").iterdir()] == []  # no half-written samples or lines left


# shapes Prometheus does not write but the in-memory readers take: the converter to series lines refuses
# them and the extract is parsed in memory instead, with the same result
ODD_SERIES = [
    {"metric": {"pod": "empty"}, "values": []},
    {"metric": {"pod": "null-pair"}, "values": [None, [T0 + 60, "2"]]},
    {"metric": {"pod": "long-pair"}, "values": [[T0 + 120, "3", "extra"], [T0 + 180, "4", "extra"]]},
    {"metric": {"pod": "text-time"}, "values": [[str(int(T0) + 240), "5"]]},
    {"metric": {}, "values": [[T0 + 30, "7"]]},
    {"metric": {"pod": "number-label", "replica": 1}, "values": [[T0 + 30, "8"]]},
    {"metric": {"pod": "plain"}, "values": [[T0 + 300, "6"], [T0 + 360.5, "+Inf"]]},
]


@pytest.mark.parametrize("odd", range(len(ODD_SERIES)))
@pytest.mark.parametrize("form", ["json", "ndjson"])
def test_odd_series_give_the_same_samples_streamed_as_in_memory(tmp_path, odd, form):
    series = [ODD_SERIES[odd], ODD_SERIES[-1]]
    folder = tmp_path / "usage" / f"date={DAY}"
    folder.mkdir(parents=True)
    body = {"status": "success", "data": {"resultType": "matrix", "result": series}}
    (folder / f"q.{form}").write_bytes(json.dumps(body).encode() if form == "json" else b"\n" + _lines(body) + b"\n")
    in_memory, streamed = _staged(tmp_path / "usage", 2**40), _staged(tmp_path / "usage", 0)
    assert streamed[0].equals(in_memory[0]) and streamed[1].equals(in_memory[1])
    # by hand: the plain series' 6 (+Inf dropped) and the odd one's value, if it has one
    expected = {0: 6.0, 1: 8.0, 2: 13.0, 3: 11.0, 4: 13.0, 5: 14.0, 6: 12.0}[odd]
    assert streamed[0]["value"].sum() == expected and streamed[1].height == 2


def test_a_converter_that_fails_names_the_file(tmp_path):
    from cost_pipeline.lib.extracts import convert_document

    missing = tmp_path / "gone.json"
    with pytest.raises(RuntimeError, match=rf"{missing}: writing its series one per line failed: FileNotFoundError"):
        convert_document(missing, tmp_path / "gone.lines")
    assert not (tmp_path / "gone.lines").exists()
    # a body the split cannot read either goes to the converter, which names it
    from cost_pipeline.lib.extracts import split_or_convert

    with pytest.raises(RuntimeError, match=rf"{missing}: writing its series one per line failed: FileNotFoundError"):
        split_or_convert(missing, tmp_path / "gone.lines", tmp_path / "gone.samples", DAY, False)
    assert not (tmp_path / "gone.lines").exists() and not (tmp_path / "gone.samples").exists()


@pytest.mark.parametrize("form", ["json", "ndjson"])
def test_series_without_a_sample_of_the_day_keep_their_labels_streamed(tmp_path, form):
    series = [{"metric": {"pod": "none"}, "values": []}, {"metric": {"pod": "yesterday"}, "values": [[T0 - 60, "1"]]}]
    folder = tmp_path / "usage" / f"date={DAY}"
    folder.mkdir(parents=True)
    body = {"status": "success", "data": {"resultType": "matrix", "result": series}}
    (folder / f"q.{form}").write_bytes(json.dumps(body).encode() if form == "json" else _lines(body))
    in_memory, streamed = _staged(tmp_path / "usage", 2**40), _staged(tmp_path / "usage", 0)
    assert streamed[0].height == 0 and streamed[1]["labels"].to_list() == [{"pod": "none"}, {"pod": "yesterday"}]
    assert streamed[0].equals(in_memory[0]) and streamed[1].equals(in_memory[1])


def test_the_converter_takes_every_series_prometheus_writes_and_refuses_the_rest(tmp_path):
    from cost_pipeline.lib.series_lines import document_series_lines

    series = [{"metric": {"__name__": "m", "pod": 'a "b"\\c\n'}, "values": []}, {"metric": {}, "values": [[T0, "1"], [T0 + 1.5, "NaN"]]}]
    body = tmp_path / "q.json"
    body.write_text(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": series}}))
    lines = document_series_lines(body, tmp_path / "q.lines")
    written = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [json.loads(w["labels"]) for w in written] == [[{"key": "__name__", "value": "m"}, {"key": "pod", "value": 'a "b"\\c\n'}], []]
    assert [(w["t"], w["v"]) for w in written] == [([], []), ([T0, T0 + 1.5], ["1", "NaN"])]
    for odd in ({"metric": {"replica": 1}, "values": []}, {"metric": {}, "values": [[T0]]}, {"metric": {}}, {"values": []}):
        body.write_text(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [odd]}}))
        assert document_series_lines(body, tmp_path / "odd.lines") is None and not (tmp_path / "odd.lines").exists()
