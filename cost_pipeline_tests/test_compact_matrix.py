"""Compact query_range bodies split by their byte patterns: the same samples and labels as the
converter and the in-memory reader, counted by hand; anything laid out otherwise left to the converter."""

import datetime as dt
import json

import polars as pl
import pytest

from cost_pipeline.lib.compact_matrix import split_body
from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.extracts import Extract, stage_local_extracts

DAY = dt.date(2026, 9, 2)
T0 = dt.datetime(2026, 9, 2, tzinfo=dt.UTC).timestamp()
COMPACT = (",", ":")  # how Prometheus writes its answers
# label values a JSON string may hold, among them the byte patterns the split cuts on (escaped in JSON)
HOSTILE = ['a "quoted" value', "back\\slash\\", "line\nbreak", '},{"metric":{"x":"y"}}', '"],[1,"2', '},"values":[[1,"2"]]',
           "naïve ☃ \u2028", "", "[[0,\"0\"]]"]


def _result(series: int = 60) -> list[dict]:
    values = lambda i: [[T0 - 300 + 300 * s if s % 3 else int(T0) - 300 + 300 * s, str(i * s / 8)] for s in range(290)]  # noqa: E731
    result = [{"metric": {"__name__": "m", "pod": f"p-{i}", "namespace": HOSTILE[i % len(HOSTILE)], **({"gpu": "a100"} if i % 7 == 0 else {})},
               "values": values(i)} for i in range(series)]
    result[3]["values"] += [[T0 + 5, "NaN"], [T0 + 6, "+Inf"], [T0 + 7, "-Inf"], [T0 + 8.125, "-2.5e-3"], [T0 + 9, "1E2"]]
    result[4]["values"] = []
    result[5]["metric"] = {}
    return result


def _body(result: list[dict], separators=COMPACT) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}, separators=separators).encode()


def _lines(result: list[dict], separators=COMPACT) -> bytes:
    return b"".join(json.dumps(s, separators=separators).encode() + b"\n" for s in result)


def _staged(tmp_path, name: str, data: bytes, stream_above: int, how: dict | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    path = tmp_path / name
    path.write_bytes(data)
    query = name.split(".")[0]
    points, series = stage_local_extracts([Extract(query, path, str(path), len(data))], DAY, tmp_path / f"work-{stream_above}", stream_above, how)
    return points.collect().sort("series", "timestamp"), series.sort("series")


@pytest.mark.parametrize("form", ["json", "ndjson"])
def test_a_body_as_prometheus_writes_it_is_split_into_every_sample_of_the_day_with_its_labels(tmp_path, form):
    result = _result()
    data = _body(result) if form == "json" else _lines(result)
    (tmp_path / "body").write_bytes(data)
    # taken by the split, in chunks of a few series or all at once, with the same samples
    whole = split_body(tmp_path / "body", tmp_path / "whole.arrow", DAY, lines=form == "ndjson")
    assert whole is not None
    for chunk_bytes in (977, 3000, 20_011):  # series of ~7 KB: chunks shorter and longer than one
        small = split_body(tmp_path / "body", tmp_path / "small.arrow", DAY, lines=form == "ndjson", chunk_bytes=chunk_bytes)
        assert small is not None and whole.equals(small)
        assert pl.read_ipc(tmp_path / "whole.arrow").equals(pl.read_ipc(tmp_path / "small.arrow"))
    # by hand: each sample inside the UTC day whose value is a finite number, and the series' labels in order
    in_day = [(i, float(t), float(v)) for i, s in enumerate(result) for t, v in s["values"]
              if T0 <= t < T0 + 86400 and v not in ("NaN", "+Inf", "-Inf")]
    points = pl.read_ipc(tmp_path / "whole.arrow")
    assert points.columns == ["series", "timestamp", "value"] and points.rows() == in_day
    assert [json.loads(t) for t in whole["labels"]] == [[{"key": k, "value": s["metric"][k]} for k in sorted(s["metric"])] for s in result]
    # staged the same streamed (split) as in memory, and as the converter's series lines would give
    how = {}
    streamed, in_memory = _staged(tmp_path, f"q.{form}", data, 0, how), _staged(tmp_path, f"q.{form}", data, 2**40)
    assert how == {"q": "split"}
    assert streamed[0].equals(in_memory[0]) and streamed[1].equals(in_memory[1])
    assert streamed[0].height == len(in_day) and streamed[0]["value"].sum() == sum(v for _, _, v in in_day)
    assert streamed[1]["labels"].to_list()[:len(HOSTILE)] == [
        {k: v for k, v in s["metric"].items() if k != "__name__"} for s in result[:len(HOSTILE)]]
    assert [p.name for p in (tmp_path / "work-0").iterdir()] == ["q.arrow"]  # staged as split, no lines left beside it


ELSEWISE = {  # bodies the split leaves to the converter (or, failing that, the in-memory reader)
    "spaced": lambda r: _body(r, separators=(", ", ": ")),
    "indented": lambda r: json.dumps({"status": "success", "data": {"resultType": "matrix", "result": r}}, indent=1).encode(),
    "keys reordered": lambda r: json.dumps({"data": {"result": r, "resultType": "matrix"}, "status": "success"}, separators=COMPACT).encode(),
    "values first": lambda r: _body([{"values": s["values"], "metric": s["metric"]} for s in r]),
    "a third field": lambda r: _body([{**s, "histograms": [[T0, {"count": "1"}]]} for s in r]),
    "a warning after the data": lambda r: _body(r)[:-1] + b',"warnings":["w"]}',
    "a label that is a number": lambda r: _body([{**r[0], "metric": {"pod": 1}}, *r[1:]]),
    "a pair of three": lambda r: _body([{**r[0], "values": [[T0, "1", "x"]]}, *r[1:]]),
    "a pair of one": lambda r: _body([{**r[0], "values": [[T0]]}, *r[1:]]),
    "a null pair": lambda r: _body([{**r[0], "values": [None, [T0, "1"]]}, *r[1:]]),
    "a value with a space": lambda r: _body([{**r[0], "values": [[T0, " 1"]]}, *r[1:]]),
    "an empty value": lambda r: _body([{**r[0], "values": [[T0, ""]]}, *r[1:]]),
    "a value holding the samples' cut": lambda r: _body([{**r[0], "values": [[T0, "1],[2"], [T0 + 1, "3"]]}, *r[1:]]),
    "a value holding a quote": lambda r: _body([{**r[0], "values": [[T0, '1"'], [T0 + 1, "3"]]}, *r[1:]]),
    "a value holding a series' close": lambda r: _body([{**r[0], "values": [[T0, '1]},[2'], [T0 + 1, "3"]]}, *r[1:]]),
    "a value that is a number": lambda r: _body([{**r[0], "values": [[T0, 7], [T0 + 1, "3"]]}, *r[1:]]),
    "a timestamp in quotes": lambda r: _body([{**r[0], "values": [[str(int(T0) + 60), "2.5"], [T0 + 120, "1"]]}, *r[1:]]),
}


@pytest.mark.parametrize("shape", sorted(ELSEWISE))
def test_a_body_laid_out_otherwise_is_left_to_the_converter_and_staged_as_in_memory(tmp_path, shape):
    result = _result(12)
    data = ELSEWISE[shape](result)
    (tmp_path / "body.json").write_bytes(data)
    assert split_body(tmp_path / "body.json", tmp_path / "s.arrow", DAY) is None and not (tmp_path / "s.arrow").exists()
    if shape == "a third field":  # the converter reads the pairs and leaves the field (the in-memory reader refuses it)
        streamed = _staged(tmp_path, "q.json", data, 0)
        assert streamed[0]["value"].sum() == sum(float(v) for s in result for t, v in s["values"] if T0 <= t < T0 + 86400 and v[-1].isdigit())
        return
    try:
        in_memory = _staged(tmp_path, "q.json", data, 2**40)
    except InputError as error:  # the in-memory reader refuses it: so does the streamed path, naming the same problem
        with pytest.raises(InputError, match=str(error).split(": ", 1)[1][:40].replace("(", r"\(").replace("[", r"\[")):
            _staged(tmp_path, "q.json", data, 0)
        return
    how = {}
    streamed = _staged(tmp_path, "q.json", data, 0, how)
    assert streamed[0].equals(in_memory[0]) and streamed[1].equals(in_memory[1])
    converted = ("spaced", "indented", "keys reordered", "values first", "a warning after the data", "a value that is a number")
    assert how["q"] == ("converted to series lines" if shape in converted else "in memory")


def test_a_value_cut_at_a_bracket_is_not_read_as_two_samples(tmp_path):
    """``[t,"5[7,"8"]`` is no JSON, but cut at ``[`` it reads as ``t,"5`` and ``7,"8"]``, two samples
    of plausible fields: the first line's missing end refuses it."""
    data = _body(_result(6)).replace(b'[%d,"0.0"]' % (int(T0) + 600), b'[%d,"5[7,"8"]' % (int(T0) + 600), 1)  # not a chunk's first line
    assert data != _body(_result(6))
    (tmp_path / "q.json").write_bytes(data)
    assert split_body(tmp_path / "q.json", tmp_path / "s.arrow", DAY) is None
    with pytest.raises(InputError, match="q.json: not a JSON object"):
        _staged(tmp_path, "q.json", data, 0)


def test_a_series_closed_inside_its_values_is_not_split(tmp_path):
    """``]},[`` closes a series' samples in the split's text: inside the values it is no JSON, and the
    split refuses it rather than reading two series where the body has one."""
    data = _body(_result(6)).replace(b"],[%d," % (int(T0) + 600), b"]},[%d," % (int(T0) + 600), 1)
    (tmp_path / "q.json").write_bytes(data)
    assert split_body(tmp_path / "q.json", tmp_path / "s.arrow", DAY) is None
    with pytest.raises(InputError, match="q.json: not a JSON object"):
        _staged(tmp_path, "q.json", data, 0)


@pytest.mark.parametrize("bad, problem", [
    ([[T0, "1"], [T0 + 60, "one"]], r"series 2: bad sample \['%d', 'one'\]" % (T0 + 60)),
    ([[T0, "1"], [T0 + 60, "1.5.5"]], r"series 2: bad sample \['%d', '1.5.5'\]" % (T0 + 60)),
    ([[T0, "0x10"]], r"series 2: bad sample \['%d', '0x10'\]" % T0),
])
def test_a_bad_sample_in_a_compact_body_is_named_as_in_memory(tmp_path, bad, problem):
    result = _result(6)
    result[2]["values"] = bad
    with pytest.raises(InputError, match=f"q.json: {problem}"):
        _staged(tmp_path, "q.json", _body(result), 0)
    assert [p.name for p in (tmp_path / "work-0").iterdir()] == []


def test_an_invalid_json_number_is_not_read_as_a_timestamp(tmp_path):
    """``01`` is no JSON number: the split refuses the body, and the readers name it as not JSON."""
    data = _body(_result(6)).replace(b"[[%d," % (int(T0) - 300), b"[[0%d," % (int(T0) - 300), 1)
    (tmp_path / "q.json").write_bytes(data)
    assert split_body(tmp_path / "q.json", tmp_path / "s.arrow", DAY) is None
    with pytest.raises(InputError, match="q.json: not a JSON object"):
        _staged(tmp_path, "q.json", data, 0)


def test_windows_split_and_converted_are_stitched_by_label_set(tmp_path):
    """A day in two windows, one as Prometheus writes it and one laid out otherwise: one series per
    label set, each sample once, as stitched in memory."""
    result = _result(20)
    first = [{**s, "values": [p for p in s["values"] if p[0] < T0 + 43200]} for s in result]
    second = [{**s, "values": [p for p in s["values"] if p[0] >= T0 + 43200]} for s in reversed(result)]
    paths = [tmp_path / "w0.json", tmp_path / "w1.json"]
    paths[0].write_bytes(_body(first))
    paths[1].write_bytes(_body(second, separators=(", ", ": ")))
    extract = Extract("q", paths[0], "archive", sum(p.stat().st_size for p in paths), windows=tuple(paths))
    streamed = [f.collect() if isinstance(f, pl.LazyFrame) else f for f in stage_local_extracts([extract], DAY, tmp_path / "s", 0)]
    in_memory = [f.collect() if isinstance(f, pl.LazyFrame) else f for f in stage_local_extracts([extract], DAY, tmp_path / "m", 2**40)]
    assert streamed[0].sort("series", "timestamp").equals(in_memory[0].sort("series", "timestamp"))
    assert streamed[1].sort("series").equals(in_memory[1].sort("series")) and streamed[1].height == 20
    in_day = [float(v) for s in result for t, v in s["values"] if T0 <= t < T0 + 86400 and v not in ("NaN", "+Inf", "-Inf")]
    assert streamed[0].height == len(in_day) and streamed[0]["value"].sum() == sum(in_day)


def test_values_are_read_as_in_memory_whatever_their_spelling(tmp_path):
    """Polars' CSV reader reads each quoted value as the number the in-memory reader casts its text to."""
    for spellings, split in ((["1.", ".5", "+.5", "-.25", "1e5", "1E+2", "2e-3", "-0", "00.5", "007", "Inf", "NaN", "+Inf"], True),
                             (["inf", "-inf", "nan", "7"], False)):  # not as Prometheus spells them: the converter's
        result = _result(6) + [{"metric": {"pod": f"v-{i}"}, "values": [[T0 + i, s]]} for i, s in enumerate(spellings)]
        data = _body(result)
        (tmp_path / "body.json").write_bytes(data)
        assert (split_body(tmp_path / "body.json", tmp_path / "s.arrow", DAY) is not None) is split
        streamed, in_memory = _staged(tmp_path, "q.json", data, 0), _staged(tmp_path, "q.json", data, 2**40)
        assert streamed[0].equals(in_memory[0])
        finite = {6 + i: float(s) for i, s in enumerate(spellings) if "n" not in s.lower()}  # inf and nan dropped
        assert dict(streamed[0].filter(pl.col("series") >= 6).select("series", "value").iter_rows()) == finite
