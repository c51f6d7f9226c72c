"""``make bench``: one day through every stage, against a plain scan (floor) and DuckDB (peer).

Machines here are shared and noisy, so what matters are ratios measured in one run on the same
files: each stage's wall time and peak RSS, the pipeline against a plain Polars scan of the columns
it needs, and against DuckDB computing the same normalization + direct attribution in SQL.
``--backfill-days N`` also times an N-day single-run backfill end to end (Dagster included) in a
child process, sampling its RSS to show whether memory stays flat. ``--focus`` and ``--legacy`` also
deliver the day as FOCUS and legacy CUR exports (Parquet and CSV.gz) and time its ingest streamed,
against the file read whole in a process of its own. Results go to stdout and are
appended to ``BENCHMARKS.md`` with the machine's description.
"""

from __future__ import annotations

import cost_pipeline  # noqa: F401 - first: it configures Polars' allocator, which polars reads when it loads

# isort: split
import argparse
import datetime as dt
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas  # noqa: F401 - Dagster loads it in every run; PyArrow's first footer statistics read would (0.3 s of the first stage)
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from cost_pipeline.config import BillingSource, bundled_config_path, load_settings
from cost_pipeline.lib.allocate import allocate_sums, allocation_from_attribution_sums
from cost_pipeline.lib.attribution import allocate_day, attribute_lake_day
from cost_pipeline.lib.billing.amortize import CHARGE_CATEGORY
from cost_pipeline.lib.billing.columns import in_days
from cost_pipeline.lib.billing.cur2 import normalize_cur2
from cost_pipeline.lib.billing.fingerprint import IGNORED, content_hash, day_fingerprint, fingerprint_parts, sink_fingerprinted
from cost_pipeline.lib.billing.map_hashes import hashed_tags
from cost_pipeline.lib.billing.totals import record_day_totals
from cost_pipeline.lib.billing.write_day import LINES_PARQUET, ingest_days
from cost_pipeline.lib.compliance import compliance_breakdown, summary_from_sums
from cost_pipeline.lib.extracts import stage_extracts
from cost_pipeline.lib.lake import PARQUET, Lake
from cost_pipeline.lib.reports import team_daily_costs
from cost_pipeline.lib.storage import Storage
from cost_pipeline.sample import org
from cost_pipeline.sample.cur2 import EXPORT, write_manifest
from cost_pipeline.sample.generate import generate
from cost_pipeline.sample.usage import write_usage

START = dt.date(2026, 9, 1)
PAGE = os.sysconf("SC_PAGE_SIZE")
# the CUR 2.0 columns the pipeline reads (the floor scans exactly these)
NEEDED = [
    "identity_line_item_id", "bill_invoice_id", "bill_payer_account_id", "line_item_usage_account_id", "line_item_line_item_type",
    "line_item_usage_start_date", "line_item_usage_end_date", "line_item_product_code", "line_item_usage_type",
    "line_item_resource_id", "line_item_usage_amount", "line_item_currency_code", "line_item_unblended_cost",
    "pricing_public_on_demand_cost", "product_region_code", "resource_tags", "savings_plan_savings_plan_effective_cost",
    "savings_plan_total_commitment_to_date", "savings_plan_used_commitment", "reservation_effective_cost",
    "reservation_unused_amortized_upfront_fee_for_billing_period", "reservation_unused_recurring_fee", "reservation_reservation_a_r_n",
]
# DuckDB's version of ingest + direct attribution: amortization by line type (the Cloud Intelligence
# Dashboards rules, every branch of lib/billing/amortize.py: reservation fees and RIFee too), the five
# tags out of the map, trimmed and lower-cased, summed per day and tags.
EFFECTIVE_SQL = """CASE line_item_line_item_type
             WHEN 'SavingsPlanCoveredUsage' THEN CAST(savings_plan_savings_plan_effective_cost AS DECIMAL(38, 12))
             WHEN 'DiscountedUsage' THEN CAST(reservation_effective_cost AS DECIMAL(38, 12))
             WHEN 'SavingsPlanNegation' THEN 0 WHEN 'SavingsPlanUpfrontFee' THEN 0
             WHEN 'Fee' THEN CASE WHEN coalesce(reservation_reservation_a_r_n, '') <> '' THEN 0
                                  ELSE CAST(line_item_unblended_cost AS DECIMAL(38, 12)) END
             WHEN 'RIFee' THEN coalesce(CAST(reservation_unused_amortized_upfront_fee_for_billing_period AS DECIMAL(38, 12)), 0)
                               + coalesce(CAST(reservation_unused_recurring_fee AS DECIMAL(38, 12)), 0)
             WHEN 'SavingsPlanRecurringFee' THEN coalesce(CAST(savings_plan_total_commitment_to_date AS DECIMAL(38, 12)), 0)
                                                 - coalesce(CAST(savings_plan_used_commitment AS DECIMAL(38, 12)), 0)
             ELSE CAST(line_item_unblended_cost AS DECIMAL(38, 12)) END"""
IN_DAY_SQL = "line_item_usage_start_date >= TIMESTAMPTZ '{day} 00:00:00+00' AND line_item_usage_start_date < TIMESTAMPTZ '{next} 00:00:00+00'"
# the four tags each line is summed by, and their key in the bench's maps (and JSON objects, and legacy columns)
TAG_KEYS = {"team": "user_ml_team", "project": "user_ml_project", "workload_type": "user_ml_workload_type", "environment": "user_ml_environment"}


def direct_sql(date: str, tag: str, currency: str, amount: str, source: str, labels: bool = False) -> str:
    """The peer's normalization + direct attribution; ``tag``: how a tag's value is read, with ``{key}``
    (``labels``: with ``{label}``, the key as GCP labels and Azure tags spell it, see :func:`label_key`)."""
    tags = "".join(f"       lower(trim({tag.replace('{label}', label_key(key)) if labels else tag.replace('{key}', key)})) AS {name},\n"
                   for name, key in TAG_KEYS.items())
    return f"SELECT {date} AS day,\n{tags}       {currency} AS currency, sum({amount}) AS amount, count(*) AS lines\nFROM {source}\nGROUP BY ALL"


def label_key(key: str) -> str:
    """A bench tag key as a GCP label or Azure tag key (``user_ml_team`` -> ``ml-team``: no AWS prefix)."""
    return key.removeprefix("user_").replace("_", "-")


LABEL_KEY = pl.element().struct.field("key").str.strip_prefix("user_").str.replace_all("_", "-")  # label_key of a map entry


DUCKDB_SQL = direct_sql("CAST(line_item_usage_start_date AS DATE)", "resource_tags['{key}']", "line_item_currency_code", EFFECTIVE_SQL,
                        "read_parquet({files}) WHERE " + IN_DAY_SQL)
# the same work as the pipeline's ingest (the lake's cost_lines columns, tags maps included, written to
# Parquet), then the direct attribution read from that file: the peer doing what the pipeline does
DUCKDB_WRITE_SQL = f"""
COPY (
SELECT CAST(line_item_usage_start_date AS DATE) AS date, 'aws' AS provider, 'aws-main' AS source, '{{period}}' AS billing_period,
       bill_payer_account_id AS billing_account_id, line_item_usage_account_id AS sub_account_id,
       identity_line_item_id AS line_item_id, line_item_line_item_type AS charge_type,
       CASE line_item_line_item_type {" ".join(f"WHEN '{k}' THEN '{v}'" for k, v in CHARGE_CATEGORY.items())} ELSE 'Adjustment' END AS charge_category,
       line_item_usage_start_date AS charge_period_start, line_item_usage_end_date AS charge_period_end,
       line_item_product_code AS service, line_item_usage_type AS usage_type, product_region_code AS region,
       line_item_resource_id AS resource_id, line_item_usage_amount AS usage_quantity,
       CAST(pricing_public_on_demand_cost AS DECIMAL(38, 12)) AS list_cost, CAST(line_item_unblended_cost AS DECIMAL(38, 12)) AS billed_cost,
       {EFFECTIVE_SQL} AS effective_cost,
       line_item_currency_code AS currency, bill_invoice_id AS invoice_id, coalesce(bill_invoice_id, '') <> '' AS is_final,
       resource_tags AS tags, filename AS source_file
FROM read_parquet({{files}}, filename = true) WHERE {IN_DAY_SQL}
) TO '{{out}}' (FORMAT parquet, COMPRESSION snappy)
"""
DUCKDB_FROM_WRITTEN_SQL = direct_sql("date", "tags['{key}']", "currency", "effective_cost", "read_parquet('{out}')")
# the same query on the bench's day delivered in another format: FOCUS (Parquet: Tags a map; CSV: a JSON
# text) and legacy CUR (a column per tag), text read as text and cast exactly, as the pipeline does
FOCUS_START = "CAST(ChargePeriodStart AS TIMESTAMPTZ)"
FOCUS_PEER = {
    "parquet": direct_sql(f"CAST({FOCUS_START} AS DATE)", "Tags['{key}']", "BillingCurrency", "CAST(EffectiveCost AS DECIMAL(38, 12))",
                          f"read_parquet('{{path}}') WHERE {FOCUS_START} >= TIMESTAMPTZ '{{day}} 00:00:00+00' AND {FOCUS_START} < TIMESTAMPTZ '{{next}} 00:00:00+00'"),
    "csv.gz": direct_sql(f"CAST({FOCUS_START} AS DATE)", "json_extract_string(Tags, '$.{key}')", "BillingCurrency", "CAST(EffectiveCost AS DECIMAL(38, 12))",
                         f"read_csv('{{path}}', all_varchar = true) WHERE {FOCUS_START} >= TIMESTAMPTZ '{{day}} 00:00:00+00' AND {FOCUS_START} < TIMESTAMPTZ '{{next}} 00:00:00+00'"),
}
# GCP: each tag a resource label, else a project label of the same key (the bench's export puts the
# environment on the project), the amount cost + its credits, each credit read through its text as the
# pipeline reads it
GCP_LABEL = ("coalesce(list_filter(labels, lambda l: l.key = '{label}')[1].value, "
             "list_filter(project.labels, lambda l: l.key = '{label}')[1].value)")
GCP_PEER = direct_sql("CAST(usage_start_time AS DATE)", GCP_LABEL, "currency",
                      "CAST(cost AS DECIMAL(38, 12)) + coalesce(list_sum(list_transform(credits, lambda c: CAST(CAST(c.amount AS VARCHAR) AS DECIMAL(38, 12)))), 0)",
                      "read_parquet('{path}') WHERE usage_start_time >= TIMESTAMPTZ '{day} 00:00:00+00' AND usage_start_time < TIMESTAMPTZ '{next} 00:00:00+00'",
                      labels=True)
# the same export extracted to JSONL (BigQuery's JSON: usage times as "2026-09-01 00:00:00 UTC" text)
GCP_JSONL_PEER = GCP_PEER.replace("read_parquet('{path}')", "(SELECT * REPLACE (CAST(replace(usage_start_time, ' UTC', '+00') AS TIMESTAMPTZ) "
                                  "AS usage_start_time) FROM read_json('{path}'))")
# Azure: an amortized cost details export (CSV.gz, every column text), its tags a JSON object
AZURE_PEER = direct_sql("strptime(Date, '%m/%d/%Y')::DATE", "json_extract_string(Tags, '$.\"{label}\"')", "BillingCurrency",
                        "CAST(CostInBillingCurrency AS DECIMAL(38, 12))",
                        "read_csv('{path}', all_varchar = true) WHERE strptime(Date, '%m/%d/%Y')::DATE = DATE '{day}'", labels=True)
LEGACY_PEER = {
    "parquet": direct_sql("CAST(line_item_usage_start_date AS DATE)", "resource_tags_{key}", "line_item_currency_code", EFFECTIVE_SQL,
                          "read_parquet('{path}') WHERE " + IN_DAY_SQL),
    "csv.gz": direct_sql("CAST(line_item_usage_start_date AS DATE)", "resource_tags_{key}", "line_item_currency_code", EFFECTIVE_SQL,
                         "(SELECT * REPLACE (CAST(line_item_usage_start_date AS TIMESTAMPTZ) AS line_item_usage_start_date) "
                         "FROM read_csv('{path}', all_varchar = true)) WHERE " + IN_DAY_SQL),
}


def _rss() -> int:
    """This process' resident memory plus its children's (the usage stage's converter processes)."""
    total = 0
    for pid in ["self", *_children()]:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (FileNotFoundError, ProcessLookupError):  # a child that has just exited
            pass
    return total


def _children() -> list[str]:
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except FileNotFoundError:
            pass
    return pids


def _cpu() -> float:
    """CPU seconds of this process' threads so far (its waited-for children's too)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Meter:
    """Wall time and peak RSS of one stage, its child processes included (sampled every 10 ms by a thread),
    and the CPU seconds of its fastest repeat (``cpu``, by stage). A stage run again (the next round)
    keeps its best time and its highest peak."""

    best: dict[str, tuple[float, int]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def results(self) -> list[tuple[str, float, int]]:
        return [(name, secs, rss) for name, (secs, rss) in self.best.items()]

    def record(self, name: str, secs: float, rss: int) -> None:
        old = self.best.get(name, (float("inf"), 0))
        self.best[name] = (min(old[0], secs), max(old[1], rss))

    def run(self, name: str, fn, repeat: int = 1):
        peak = [_rss()]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.01)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        best, out = self.best.get(name, (float("inf"), 0))[0], None
        for _ in range(repeat):
            t, cpu = time.perf_counter(), _cpu()
            out = fn()
            wall, used = time.perf_counter() - t, _cpu() - cpu
            print(f"  {wall:7.2f} s {used:6.1f} CPU-s  {name[:70]}", file=sys.stderr, flush=True)  # each try, to see the minutes' noise
            if wall < best:
                best, self.cpu[name] = wall, used
        stop.set()
        thread.join()
        self.record(name, best, max(peak[0], _rss()))
        return out


def _matrix(series: list[tuple[dict, np.ndarray]], start: float, step: int) -> dict:
    ts = [start + i * step for i in range(len(series[0][1]))] if series else []
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": m, "values": [[t, f"{v:.6g}"] for t, v in zip(ts, values)]} for m, values in series]}}


def pod_extracts(folder: Path, day: dt.date, pods: int, step: int, seed: int = 1, series_lines: bool = False) -> int:
    """kube-state-metrics requests and cAdvisor usage per pod (the sample namespaces), at ``step`` seconds;
    ``series_lines``: written one series per line (``<name>.ndjson``) instead of as query_range bodies."""
    rng = np.random.default_rng(seed)
    steps = 86400 // step
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    namespaces = [f"{team}-{kind}" for team in org.WORKLOAD_TEAMS for kind in ("training", "serving")]
    requests, cpu, memory = [], [], []
    for pod in range(pods):
        ns = namespaces[pod % len(namespaces)]
        labels = {"namespace": ns, "pod": f"{ns}-{pod:06d}", "label_ml_team": ns.rsplit("-", 1)[0]}
        cpu_req = float(rng.integers(1, 8))
        requests.append(({**labels, "resource": "cpu"}, np.full(steps, cpu_req)))
        requests.append(({**labels, "resource": "memory"}, np.full(steps, cpu_req * 2**32)))
        cpu.append(({"namespace": ns, "pod": labels["pod"]}, cpu_req * rng.uniform(0.2, 1.3, steps)))
        memory.append(({"namespace": ns, "pod": labels["pod"]}, cpu_req * 2**32 * rng.uniform(0.3, 1.1, steps)))
    folder.mkdir(parents=True, exist_ok=True)
    for name, series in (("k8s_requests", requests), ("k8s_cpu_usage", cpu), ("k8s_memory_usage", memory)):
        body = _matrix(series, start, step)
        if series_lines:  # replaces the generator's extract of the same query
            (folder / f"{name}.json").unlink(missing_ok=True)
            (folder / f"{name}.ndjson").write_text("".join(json.dumps(s, separators=(",", ":")) + "\n" for s in body["data"]["result"]))
        else:
            (folder / f"{name}.ndjson").unlink(missing_ok=True)
            (folder / f"{name}.json").write_text(json.dumps(body, separators=(",", ":")))
    return (len(requests) + len(cpu) + len(memory)) * steps


FLOOR = """
import json, resource, sys, time
import polars as pl
files, columns, repeat = json.loads(sys.argv[1])
best = float("inf")
for _ in range(repeat):
    t = time.perf_counter()
    pl.scan_parquet(files).select(columns).collect(engine="streaming")
    best = min(best, time.perf_counter() - t)
print(json.dumps([best, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]))
"""


WRITE_FLOOR = "floor writing the lake: the lines normalized and sunk to Parquet (no checks, hashes, sums or tag sets)"


def plain_scan(files: list[str], repeat: int) -> tuple[float, int]:
    """The floor as anyone would run it: a plain Polars scan of the needed columns into memory, in a
    process of its own with Polars' defaults (this process runs with the pipeline's settings, one
    allocator arena and one row group read ahead, which suit streaming sinks but slow a 13 M-row collect
    into memory from ~9 s to 17-20 s): (best seconds, peak RSS)."""
    env = {k: v for k, v in os.environ.items() if k not in ("_RJEM_MALLOC_CONF", "POLARS_ROW_GROUP_PREFETCH_SIZE")}
    out = subprocess.run([sys.executable, "-c", FLOOR, json.dumps([files, NEEDED, repeat])], env=env, capture_output=True, text=True, check=True)
    seconds, rss = json.loads(out.stdout)
    return seconds, rss


INGEST, PEER = "ingest: read, validate, write cost_lines", "peer: DuckDB normalize + direct attribution"
DIRECT = "direct attribution (tags, no pools)"
# DuckDB's query in a process of its own, the best of two tries: (seconds, CPU seconds, peak RSS bytes, its rows with numbers as text)
PEER_QUERY = """
import duckdb, json, resource, sys, time
con = duckdb.connect()
con.sql("SET enable_progress_bar = false")
own = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
wall = float("inf")
for _ in range(2):  # the best of two: a fresh process' first query warms it
    t, cpu = time.perf_counter(), own()
    rows = con.sql(sys.argv[1]).fetchall()
    if time.perf_counter() - t < wall:
        wall, used = time.perf_counter() - t, own() - cpu
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) * 1024
print(json.dumps([wall, used, peak, [[str(v) for v in row] for row in rows]]))
"""


def peer_query(meter: Meter, sql: str) -> list[list[str]]:
    """DuckDB's query timed in a process of its own (the best of two tries), recorded in ``meter``; its rows."""
    out = subprocess.run([sys.executable, "-c", PEER_QUERY, sql], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"DuckDB's query failed: {out.stderr[-2000:]}")
    wall, used, peak, rows = json.loads(out.stdout.splitlines()[-1])
    print(f"  {wall:7.2f} s {used:6.1f} CPU-s  {PEER}", file=sys.stderr, flush=True)
    if wall < meter.best.get(PEER, (float("inf"), 0))[0]:
        meter.cpu[PEER] = used
    meter.record(PEER, wall, peak)
    return rows


def ingest_profile(meter: Meter, files: list[str], lake: Lake, written: Path, repeat: int) -> list[str]:
    """Rows of the ingest's pieces measured alone (seconds, CPU seconds), beside the whole ingest and
    DuckDB's query as ``meter`` measured them: where a 10 M-line day's ingest spends its time, from
    every run of the bench rather than from one-off profiles. The lake day's lines are held in memory
    for the writer's rows (1.5 GiB at 10 M lines), after the stages' peaks were taken."""
    pieces = Meter()
    pieces.run("tag-set hashes of the tags maps from their dictionary pages (PyArrow, before the pass)",
               lambda: [hashed_tags(Path(f), "resource_tags", "line_item_usage_start_date", [START]) for f in files], repeat)
    lines = lake.scan_days("cost_lines", [START])
    schema = lines.collect_schema()
    hashed = content_hash(schema)
    read = [c for c in schema.names() if c not in IGNORED]  # what the content hash reads
    pieces.run("the lake day's lines read, streamed, the columns the content hash reads (nothing kept)",
               lambda: lines.select(pl.col(read).null_count()).collect(engine="streaming"), repeat)
    pieces.run("... and their content hashes with the day's fingerprint", lambda: lines.with_columns(_h=hashed).select(
        fingerprint_parts(pl.col("_h"))).collect(engine="streaming"), repeat)
    frame = lines.collect()
    low = [c for c, t in frame.schema.items() if t == pl.String and frame[c].n_unique() <= 1000]
    pieces.run("Polars' Parquet writer alone: the lake day's lines from memory", lambda: frame.write_parquet(written, **LINES_PARQUET), repeat)
    pieces.run(f"... their {len(low)} low-cardinality string columns alone", lambda: frame.select(low).write_parquet(written, **LINES_PARQUET), repeat)
    written.unlink(missing_ok=True)
    seconds = {name: secs for name, secs, _ in meter.results + pieces.results}
    cpu = {**meter.cpu, **pieces.cpu}
    return [f"| {name} | {seconds[name]:.2f} | {cpu[name]:.1f} |" for name in [INGEST, PEER, *(name for name, _, _ in pieces.results)]]


def day_profile(lake: Lake, settings, usage_folder: Path, work: Path, stream_above: int, repeat: int) -> list[str]:
    """Rows of the usage and attribution stages' pieces measured alone (seconds, CPU seconds), as
    :func:`ingest_profile` does for the ingest: where the rest of the whole day goes, the part DuckDB's
    query has no counterpart for (it parses no usage and splits no pool)."""
    pieces = Meter()
    staged: list = []

    def stage():  # each extract's body split (or converted) and its samples staged, as the usage asset does
        shutil.rmtree(work, ignore_errors=True)
        staged[:] = stage_extracts(usage_folder, START, work / "extracts", stream_above=stream_above)

    pieces.run("usage: the extracts' bodies split into samples and staged (three bodies side by side)", stage, repeat)
    pieces.run("usage: the staged samples sunk to the lake's file with their fingerprint",
               lambda: sink_fingerprinted(staged[0], work / "usage.parquet", per_file=["query"], **PARQUET), repeat)
    shutil.rmtree(work, ignore_errors=True)
    pools = settings.allocation.pools
    attributed: list = []

    def summed():  # one streaming pass over the day's lines, then the few combinations classified
        attributed[:] = [attribute_lake_day(lake, START, settings.tagging, pools)]

    pieces.run("attribution: the day summed per combination of what the rules read, the combinations classified", summed, repeat)
    pieces.run("attribution: the quarantine's lines (those of failing tag sets) sunk",
               lambda: attributed[0].quarantine().sink_parquet(work.with_suffix(".quarantine.parquet"), **PARQUET), repeat)
    work.with_suffix(".quarantine.parquet").unlink(missing_ok=True)
    pieces.run("attribution: the four pools split by the day's usage (its samples read query by query)",
               lambda: allocate_day(lake, START, settings, attributed[0].sums), repeat)
    return [f"| {name} | {secs:.2f} | {pieces.cpu[name]:.1f} |" for name, secs, _ in pieces.results]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")) / 2**20
    import duckdb

    return (f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB; Python {platform.python_version()}, Polars {pl.__version__}, "
            f"DuckDB {duckdb.__version__}")


def day_benchmark(out: Path, lines_per_day: int, pods: int, step: int, repeat: int, series_lines: bool = False,
                  stream_above_mb: float | None = None) -> list[str]:
    import duckdb

    t = time.perf_counter()
    marker = out / f".generated-exact-{lines_per_day}-{pods}-{step}{'-ndjson' if series_lines else ''}"
    if marker.exists():  # --out kept from an earlier run with the same sizes: reuse the files
        usage_samples = int(marker.read_text())
    else:
        for old in out.glob(".generated-*"):
            old.unlink()
        generate(out, START, 1, lines_per_day, seed=1, exact_lines=True)
        usage_samples = pod_extracts(out / "usage" / f"date={START}", START, pods, step, series_lines=series_lines) if pods else 0
        marker.write_text(str(usage_samples))
    generated = time.perf_counter() - t
    settings = load_settings(bundled_config_path())
    source = BillingSource(name="aws-main", format="aws_cur2", uri=str(out / "billing" / "aws"))
    files = sorted(str(p) for p in (out / "billing" / "aws" / "data").rglob("*.parquet"))
    lake = Lake.from_uri(str(out / "lake"))
    meter = Meter()
    stream_above = int((settings.usage.stream_documents_above_mb if stream_above_mb is None else stream_above_mb) * 2**20)

    def ingest():  # as the asset: line keys checked per file, then sunk, hashed, summed (amounts, currencies checked) and tag sets kept in one pass
        with lake.staging("cost_lines") as staging, lake.staging("tag_sets") as tag_set_stage:
            path, _ = staging.reserve(START)
            sums, tag_sets = ingest_days([source], [START], lambda _: Storage(), {START: path})
            tag_set_stage.write_day(START, tag_sets.drop("date"))
        record_day_totals(lake, sums, [START])
        return lake.scan_days("cost_lines", [START]).select(pl.len()).collect().item()

    def direct_attribution():  # the asset's path without pools: the day's tag sets classified, not its lines
        attributed = attribute_lake_day(lake, START, settings.tagging, [])
        return allocate_sums(allocation_from_attribution_sums(attributed.sums), "bench", [], None, settings.tagging)

    pools = settings.allocation.pools

    def usage():  # as the asset: each extract's samples staged, the day sunk from them with its fingerprint (its
        # data version), the series' labels written
        with lake.staging("usage") as staging, lake.staging("usage_series") as series_staging:
            points, series = stage_extracts(out / "usage", START, staging.folder / "extracts", stream_above=stream_above)
            sink_fingerprinted(points, staging.reserve(START)[0], per_file=["query"], **PARQUET)
            series_staging.write_day(START, series)
            day_fingerprint(series)

    def attribution():  # as the asset: sums per combination classified, the quarantine's lines sunk
        attributed = attribute_lake_day(lake, START, settings.tagging, pools)
        attributed.quarantine().sink_parquet(out / "untagged_spend.parquet", **PARQUET)  # as the asset writes it
        lake.write_day("tag_compliance", START, compliance_breakdown(summary_from_sums(attributed.sums)))
        allocated = allocate_day(lake, START, settings, attributed.sums)
        lake.write_day("allocated_costs", START, allocated)
        return allocated

    sql = DUCKDB_SQL.format(files=json.dumps(files).replace('"', "'"), day=START, next=START + dt.timedelta(days=1))
    usage_name = f"usage: parse extracts, write usage and its fingerprint ({usage_samples:,} pod samples; documents above {stream_above / 2**20:g} MB streamed)"
    # In rounds: each round runs the whole day's stages, the floor and the peer once, and each keeps its
    # best round. On these shared machines a minute can be 1.5 times as slow as the next; a stage
    # repeated back to back took all its tries in one such minute, and its ratio to the peer (timed
    # minutes later) followed the minutes more than the code. The floor and the peer run in processes
    # of their own, so the memory they hold never counts against the next round's stages, and take the
    # best of two tries a round there (a fresh process' first try warms it): if anything, in their favour.
    for _ in range(repeat):
        count = meter.run(INGEST, ingest)
        direct = meter.run(DIRECT, direct_attribution)
        meter.run(usage_name, usage)
        allocated = meter.run("attribution: tag sets classified -> quarantine, compliance, allocation (direct + 4 pools)", attribution)
        meter.run("reports: team_daily_costs", lambda allocated=allocated: team_daily_costs(allocated))
        meter.record("floor: plain scan of the needed columns", *plain_scan(files, 2))
        duck = peer_query(meter, sql)
    floor_written = out / "floor_cost_lines.parquet"

    def lake_write_floor():  # what any ingest that keeps the lake's copy of the lines pays, nothing checked, hashed or summed
        lines = pl.concat([normalize_cur2(pl.scan_parquet(f).filter(in_days(pl.col("line_item_usage_start_date"), [START])), source.name, Path(f).name)
                           for f in files]).filter(pl.col("date") == START).drop("tags")
        lines.sink_parquet(floor_written, engine="streaming", **LINES_PARQUET)
        return pl.scan_parquet(floor_written).select(pl.len()).collect().item()

    assert meter.run(WRITE_FLOOR, lake_write_floor, repeat) == count, "the floor writing the lake lost lines"
    floor_written.unlink(missing_ok=True)
    con = duckdb.connect()
    written = out / "duckdb_cost_lines.parquet"
    write_sql = DUCKDB_WRITE_SQL.format(files=json.dumps(files).replace('"', "'"), day=START, next=START + dt.timedelta(days=1),
                                        period=f"{START:%Y-%m}", out=written)

    def duck_writing():
        con.sql(write_sql)
        return con.sql(DUCKDB_FROM_WRITTEN_SQL.format(out=written)).fetchall()

    duck_written = meter.run("peer writing the lake too: DuckDB normalizes into Parquet, then attributes from it", duck_writing, repeat)
    written.unlink(missing_ok=True)

    profile = ingest_profile(meter, files, lake, out / "profile_cost_lines.parquet", repeat)
    rest = day_profile(lake, settings, out / "usage", out / "profile_usage", stream_above, repeat) if pods else []
    duck_total = sum(Decimal(r[-2]) for r in duck)
    direct_total = direct["amount"].sum()
    assert direct_total == duck_total == sum(r[-2] for r in duck_written), f"DuckDB and the pipeline disagree: {duck_total} vs {direct_total}"
    by_name = {name: (secs, rss) for name, secs, rss in meter.results}
    floor, peer = by_name["floor: plain scan of the needed columns"][0], by_name[PEER][0]
    stages = [n for n in by_name if not n.startswith(("floor", "peer", "direct attribution"))]
    whole = sum(by_name[n][0] for n in stages)
    ingest_direct = by_name[INGEST][0] + by_name[DIRECT][0]
    rows = [f"| {name} | {secs:.2f} | {rss / 2**30:.2f} | {secs / floor:.2f} | {secs / peer:.2f} |" for name, (secs, rss) in by_name.items()]
    rows.append(f"| **whole day** (ingest → usage → attribution → reports) | {whole:.2f} | "
                f"{max(by_name[n][1] for n in stages) / 2**30:.2f} | {whole / floor:.2f} | {whole / peer:.2f} |")
    rows.append(f"| **ingest + direct attribution** | {ingest_direct:.2f} | | {ingest_direct / floor:.2f} | {ingest_direct / peer:.2f} |")
    writing = by_name["peer writing the lake too: DuckDB normalizes into Parquet, then attributes from it"][0]
    rows += ["", f"Ingest + direct attribution against the peer writing the lake too: {ingest_direct / writing:.2f}×; the whole day: {whole / writing:.2f}×. "
             f"The ingest against the floor writing the lake (Polars' sink of the normalized lines alone): {by_name[INGEST][0] / by_name[WRITE_FLOOR][0]:.2f}×; "
             f"that floor against DuckDB's read-only query: {by_name[WRITE_FLOOR][0] / peer:.2f}×."]
    missed = "missed" if ingest_direct > peer else "met"
    rows += ["", f"Profile of the ingest (the target ingest + direct attribution ≤ 1.0× DuckDB is {missed}): its pieces measured alone, "
             "after the stages, with their CPU seconds (both cores busy: CPU seconds up to twice the wall time).", "",
             "| piece | seconds | CPU seconds |", "|---|---|---|", *profile]
    if rest:
        whole_missed = "missed" if whole > 3 * peer else "met"
        rows += ["", f"Profile of the usage and attribution stages (the target whole day ≤ 3× DuckDB is {whole_missed}): their pieces measured "
                 "alone, after the ingest's, with their CPU seconds.", "", "| piece | seconds | CPU seconds |", "|---|---|---|", *rest]
    head = [f"One day: {count:,} CUR 2.0 lines (Savings Plan negations and fees included), {usage_samples:,} usage samples "
            f"({pods:,} pods at {step} s{', extracts one series per line' if series_lines else ''}); data generated in {generated:.0f} s. Totals checked equal to DuckDB's: {duck_total:.2f}.", "",
            "| stage | seconds | peak RSS GiB | × floor | × DuckDB |", "|---|---|---|---|---|"]
    return head + rows


def _timed_cli(args: list[str], home: Path) -> tuple[float, float, list[tuple[float, int]]]:
    """Run ``cost-pipeline ARGS`` in a child process: (wall, when the daily job ended, RSS trace, its steps)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cost_pipeline.cli", *args], env={**os.environ, "DAGSTER_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    daily_done: list[float] = []  # when the CLI reports the daily job's end (the reports job follows)

    def read_output():
        for line in proc.stdout:
            output.append(line)
            if line.startswith("daily_costs_job:"):
                daily_done.append(time.perf_counter() - t)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    trace: list[tuple[float, int, float]] = []  # (seconds since the start, RSS, epoch)
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/statm") as fh:
                trace.append((time.perf_counter() - t, int(fh.read().split()[1]) * PAGE, time.time()))
        except OSError:
            pass
        time.sleep(0.5)
    wall = time.perf_counter() - t
    reader.join(timeout=5)
    if proc.returncode:
        raise SystemExit(f"backfill failed:\n{''.join(output)[-3000:]}")
    return wall, daily_done[0] if daily_done else wall, trace, _step_spans(home)


def _step_spans(home: Path) -> list[tuple[str, float, float]]:
    """(step, start, end) in epoch seconds of the newest daily job's steps, from the run's Dagster events."""
    import dagster as dg

    before, os.environ["DAGSTER_HOME"] = os.environ.get("DAGSTER_HOME"), str(home)  # the config's base_dir reads it
    starts, spans = {}, []
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = next(r for r in instance.get_runs(limit=5) if r.job_name == "daily_costs_job")
            for record in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}):
                if record.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                    starts[record.step_key] = record.timestamp
                else:
                    spans.append((record.step_key, starts[record.step_key], record.timestamp))
    finally:
        if before is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = before
    return spans


def _backfill_line(what: str, days: int, wall: float, daily_end: float, trace: list[tuple[float, int, float]],
                   steps: list[tuple[str, float, float]]) -> str:
    daily = [r for s, r, _ in trace if s <= daily_end] or [r for _, r, _ in trace]
    quarter = max(1, len(daily) // 4)
    early, late = max(daily[:quarter]), max(daily[-quarter:])
    # each step works through the days in order: its first quarter holds the first days, its last the last ones
    per_step = []
    for step, start, end in steps:
        first = [r for _, r, at in trace if start <= at <= start + (end - start) / 4]
        last = [r for _, r, at in trace if end - (end - start) / 4 <= at <= end]
        if end - start >= 0.05 * daily_end and first and last:
            per_step.append(f"{step} {max(first) / 2**30:.2f} → {max(last) / 2**30:.2f}")
    return (f"{what}: {wall:.1f} s wall in all; the daily tables {daily_end:.1f} s ({daily_end / days:.2f} s per day), then the reports "
            f"{wall - daily_end:.1f} s. Peak RSS of the daily job {max(daily) / 2**30:.2f} GiB: in its first quarter "
            f"{early / 2**30:.2f} GiB, in its last quarter {late / 2**30:.2f} GiB; of the whole run {max(r for _, r, _ in trace) / 2**30:.2f} GiB. "
            f"Per step (longer than 5 % of the job), its peak RSS in GiB while on its first quarter of the days → its last: {', '.join(per_step) or 'none'}; "
            f"each step's time (1 s or more): {', '.join(f'{step} {end - start:.0f} s' for step, start, end in steps if end - start >= 1) or 'none'}.")


def as_month_parts(aws: Path, parts: int) -> None:
    """Rewrite each billing period's CUR 2.0 files (the generator writes one per day) as ``parts`` files
    that each hold lines of every day, the manifest listing them: how AWS Data Exports deliver a month."""
    for folder in sorted((aws / "data").glob("BILLING_PERIOD=*")):
        files = sorted(folder.glob("*.parquet"))
        counts = [pl.scan_parquet(f).select(pl.len()).collect().item() for f in files]
        staged = folder.with_name(folder.name + ".parts")
        staged.mkdir()
        names = [f"acme-ml-cur2-part-{i + 1:05d}.snappy.parquet" for i in range(parts)]
        for i, name in enumerate(names):
            slices = [pl.scan_parquet(f).slice(c * i // parts, c * (i + 1) // parts - c * i // parts) for f, c in zip(files, counts, strict=True)]
            pl.concat(slices).sink_parquet(staged / name, compression="snappy")
        shutil.rmtree(folder)
        staged.rename(folder)
        manifest_path = next((aws / "metadata" / folder.name).glob("*Manifest.json"))
        manifest = json.loads(manifest_path.read_text())
        prefix = manifest["dataFiles"][0].rsplit("/", 1)[0]
        manifest_path.write_text(json.dumps({**manifest, "dataFiles": [f"{prefix}/{name}" for name in names]}))


def repeat_days(out: Path, start: dt.date, made: int, days: int) -> None:
    """Fill ``days`` days of billing from the ``made`` generated ones: day i is a copy of day i mod
    ``made`` with its usage start and end shifted, in its own period's folder, each period's manifest
    listing its files; usage extracts are written for the copied days. Generating a year at 1 M lines a
    day takes about 1.5 hours on this machine, copying a day 4-5 s of a core (PyArrow's reader and
    writer release the GIL, so the copies run on every core: 28 days generated and 337 copied in
    970 s on 2 cores)."""
    aws = out / "billing" / "aws"

    def copy(i: int) -> None:
        source, day = start + dt.timedelta(days=i % made), start + dt.timedelta(days=i)
        table = pq.read_table(aws / "data" / f"BILLING_PERIOD={source:%Y-%m}" / f"{EXPORT}-{source.day:05d}.snappy.parquet")
        offset = pa.scalar(day - source, pa.duration("ms"))
        for name in ("line_item_usage_start_date", "line_item_usage_end_date"):
            table = table.set_column(table.schema.get_field_index(name), name, pc.add(table[name], offset).cast(table.schema.field(name).type))
        folder = aws / "data" / f"BILLING_PERIOD={day:%Y-%m}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{EXPORT}-{day.day:05d}.snappy.parquet", compression="snappy", row_group_size=200_000)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(copy, range(made, days)))
    for folder in sorted((aws / "data").glob("BILLING_PERIOD=*")):
        write_manifest(aws, folder.name.split("=", 1)[1], sorted(f.name for f in folder.glob("*.parquet")))
    write_usage(out / "usage", start + dt.timedelta(days=made), days - made, seed=2)  # as generate() writes them


def local_instance(home: Path) -> None:
    """A Dagster home configured as ``make demo``'s (``deployments/local/dagster.yaml``: SQLite with the
    event log's connections kept open, see ``cost_pipeline/instance/sqlite_storage.py``)."""
    home.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "deployments" / "local" / "dagster.yaml", home / "dagster.yaml")


def backfill_benchmark(out: Path, days: int, lines_per_day: int, parts: int = 0, unique: int = 0) -> list[str]:
    """An N-day single-run backfill through ``cost-pipeline run`` (Dagster included), RSS sampled; then
    the backfill a rules change needs (``run --rules-only``: cost_lines and usage kept). ``parts``: each
    month delivered as that many files holding every day (0: the generator's file per day). ``unique``:
    only that many days are generated, the others are their copies with shifted dates (:func:`repeat_days`)."""
    t = time.perf_counter()
    # the bench's day, or earlier when the range would reach days that have not ended yet
    start = min(START, dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days))
    made = min(unique or days, days)
    marker = out / f".generated-exact-{start}-{days}-{lines_per_day}-{parts}-{made}"
    if not marker.exists():  # --out kept from an earlier run with the same sizes: reuse the files
        shutil.rmtree(out, ignore_errors=True)
        generate(out, start, made, lines_per_day, seed=2, exact_lines=True)
        if made < days:
            repeat_days(out, start, made, days)
        if parts:
            as_month_parts(out / "billing" / "aws", parts)
        marker.write_text("")
    generated = time.perf_counter() - t
    for old in ("lake", "home"):  # every run starts from an empty lake and instance
        shutil.rmtree(out / old, ignore_errors=True)
    local_instance(out / "home")
    raw = yaml.safe_load(bundled_config_path().read_text())
    raw.update(lake_uri=str(out / "lake"), partitions_start_date=start, billing_sources=[{"name": "aws-main", "format": "aws_cur2", "uri": str(out / "billing" / "aws")}],
               usage={"extracts_uri": str(out / "usage")}, slack={"outbox_uri": str(out / "outbox")})
    (out / "config.yaml").write_text(yaml.safe_dump(raw))
    end = start + dt.timedelta(days=days - 1)
    args = ["run", "--config", str(out / "config.yaml"), "--start", str(start), "--end", str(end)]
    full = _timed_cli(args, out / "home")
    rules = _timed_cli([*args, "--rules-only"], out / "home")
    layout = f"each month in {parts} files holding every day" if parts else "a file per day"
    if made < days:
        layout += f", {made} days generated and repeated with shifted dates"
    return [_backfill_line(f"{days}-day single-run backfill at {lines_per_day:,} lines/day, {layout} (data generated in {generated:.0f} s)", days, *full),
            "", _backfill_line(f"The same {days} days again after a rules change (`run --rules-only`: cost_lines and usage kept)", days, *rules)]


REPORTS = """
import json, sys, threading, time
import cost_pipeline
from cost_pipeline import cli
cli._use_config(sys.argv[1])
from cost_pipeline.definitions import defs
peak = [0]
def watch():
    while True:
        with open("/proc/self/statm") as fh:
            peak[0] = max(peak[0], int(fh.read().split()[1]) * PAGE)
        time.sleep(0.2)
PAGE = int(sys.argv[2])
threading.Thread(target=watch, daemon=True).start()
t = time.perf_counter()
result = defs().resolve_job_def("reports_job").execute_in_process(instance=cli._instance(), raise_on_error=True, run_config=cli._log_config("CRITICAL"))
steps = {e.step_key: e.event_specific_data.duration_ms / 1000 for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
print(json.dumps([time.perf_counter() - t, peak[0], steps]))
"""


def _shifted(frame: pl.LazyFrame, days: int) -> pl.LazyFrame:
    off = dt.timedelta(days=days)
    return frame.with_columns([pl.col(c) + off for c, t in frame.collect_schema().items() if t == pl.Date or isinstance(t, pl.Datetime)])


def reports_benchmark(backfill: Path, days: int, copies: int) -> list[str]:
    """The reports job over a lake of ``copies`` × ``days`` days: the backfill's daily tables (and the
    bill's totals) repeated with their dates shifted, as a year's lake would hold them; generating a
    year of billing at 1 M lines a day takes hours, shifting 30 days' tables minutes."""
    t = time.perf_counter()
    lake, year = backfill / "lake", backfill / "lake_repeated"
    shutil.rmtree(year, ignore_errors=True)
    for table in sorted(p for p in lake.iterdir() if p.is_dir() and p.name != "reports"):
        parts = sorted(table.glob("date=*"))
        if table.name == "bill_totals":
            frame = pl.scan_parquet(table / "part-0.parquet")
            (year / table.name).mkdir(parents=True)
            pl.concat([_shifted(frame, days * k) for k in range(copies)]).collect().write_parquet(year / table.name / "part-0.parquet")
        for k in range(copies):
            for part in parts:
                out = year / table.name / f"date={dt.date.fromisoformat(part.name[5:]) + dt.timedelta(days=days * k)}"
                out.mkdir(parents=True)
                for f in part.glob("*.parquet"):
                    _shifted(pl.scan_parquet(f), days * k).sink_parquet(out / f.name, compression="snappy")
    built = time.perf_counter() - t
    raw = yaml.safe_load((backfill / "config.yaml").read_text())
    (backfill / "config_repeated.yaml").write_text(yaml.safe_dump({**raw, "lake_uri": str(year)}))
    home = backfill / "home_repeated"
    shutil.rmtree(home, ignore_errors=True)
    local_instance(home)

    def reports() -> str:
        out = subprocess.run([sys.executable, "-c", REPORTS, str(backfill / "config_repeated.yaml"), str(PAGE)], env={**os.environ, "DAGSTER_HOME": str(home)},
                             capture_output=True, text=True, check=True).stdout
        wall, peak, steps = json.loads(out.strip().splitlines()[-1])
        shown = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(steps.items(), key=lambda kv: -kv[1]))
        return f"{wall:.1f} s, peak RSS {peak / 2**30:.2f} GiB ({shown})"

    first = reports()
    # a daily run on that lake: one day's cost_lines replaced, the other days' totals cached (cost_line_totals)
    newest = max(year.glob("cost_lines/date=*")) / "part-0.parquet"
    pl.read_parquet(newest).write_parquet(newest, compression="snappy")
    again = reports()
    lines = int(pl.scan_parquet(str(year / "cost_lines" / "date=*" / "*.parquet")).select(pl.len()).collect().item())
    return [f"Reports over {copies * days} days ({copies} copies of the backfill's {days} days, dates shifted; {lines:,} cost lines; built in {built:.0f} s): "
            f"the reports job {first}. Run again after one day's cost_lines were replaced (a daily run on a year's lake: the other days' "
            f"totals are read from cost_line_totals): {again}."]


def focus_benchmark(out: Path) -> list[str]:
    """The bench's CUR day as FOCUS exports (the same lines mapped to FOCUS columns): Parquet typed as AWS's
    FOCUS Data Exports write it (``Tags`` a map) and CSV.gz (``Tags`` a JSON object), each streamed and
    read whole."""
    tables = []
    for kind in ("parquet", "csv.gz"):
        path = out / f"focus-{kind.replace('.', '-')}" / f"{START:%Y-%m}" / f"export.{kind}"
        if not path.exists():
            _in_child(_write_focus, out, kind, path)
        source = BillingSource(name="focus", format="focus", uri=str(path.parent.parent))
        tables += _export_benchmark(out, f"a FOCUS {kind} export", "--focus", source, path, FOCUS_PEER[kind]) + [""]
    return tables[:-1]


def export_benchmark(out: Path, kind: str) -> list[str]:
    """The bench's CUR day as a GCP Cloud Billing detailed export extracted to Parquet (BigQuery's nested
    records: ``service``, ``sku``, ``project`` with its labels, ``labels``, ``credits``) or an Azure
    amortized cost details export (CSV.gz, as Cost Management writes it), streamed and read whole."""
    folder, name, fmt, write, what, peer = {
        "gcp": ("gcp-parquet", "billing_export.parquet", "gcp_billing_export", _write_gcp, "a GCP billing export in Parquet", GCP_PEER),
        "gcp_jsonl": ("gcp-jsonl", "billing_export.jsonl", "gcp_billing_export", _write_gcp_jsonl, "a GCP billing export in JSONL", GCP_JSONL_PEER),
        "azure": ("azure-csv-gz", "costdetails.csv.gz", "azure_cost_export", _write_azure, "an Azure cost details export in CSV.gz", AZURE_PEER),
    }[kind]
    path = out / folder / f"{START:%Y-%m}" / name
    if not path.exists():
        _in_child(write, out, path)
    source = BillingSource(name=kind, format=fmt, uri=str(path.parent.parent))
    return _export_benchmark(out, what, f"--{kind.replace('_', '-')}", source, path, peer)


def _write_gcp(out: Path, path: Path) -> None:
    """Each CUR line as a GCP export row: its tags as resource labels but the environment as a project
    label, a Savings Plan's discount on covered usage as a committed-use credit (negative)."""
    path.parent.mkdir(parents=True)
    labels = pl.col("resource_tags").cast(TAG_ENTRIES).list.eval(pl.struct(key=LABEL_KEY, value=pl.element().struct.field("value")))
    on_project = pl.element().struct.field("key") == "ml-environment"
    covered = pl.col("line_item_line_item_type") == "SavingsPlanCoveredUsage"
    discount = pl.col("savings_plan_savings_plan_effective_cost") - pl.col("line_item_unblended_cost")
    credit = pl.struct(name=pl.lit("Committed use discount"), amount=discount, type=pl.lit("COMMITTED_USAGE_DISCOUNT"))
    _cur_day(out).select(
        billing_account_id=pl.col("bill_payer_account_id"),
        service=pl.struct(id=pl.col("line_item_product_code"), description=pl.col("line_item_product_code")),
        sku=pl.struct(id=pl.col("line_item_usage_type"), description=pl.col("line_item_usage_type")),
        usage_start_time=pl.col("line_item_usage_start_date"), usage_end_time=pl.col("line_item_usage_end_date"),
        project=pl.struct(id=pl.col("line_item_usage_account_id"), labels=labels.list.filter(on_project)),
        labels=labels.list.filter(~on_project),
        location=pl.struct(region=pl.col("product_region_code")),
        resource=pl.struct(global_name=pl.col("line_item_resource_id")),
        cost=pl.col("line_item_unblended_cost"), currency=pl.col("line_item_currency_code"), cost_type=pl.lit("regular"),
        usage=pl.struct(amount=pl.col("line_item_usage_amount"), unit=pl.lit("hours")),
        credits=pl.when(covered).then(pl.concat_list(credit)).otherwise(pl.lit([], pl.List(GCP_CREDIT))),
        invoice=pl.struct(month=pl.lit(f"{START:%Y%m}")), cost_at_list=pl.col("pricing_public_on_demand_cost"),
    ).sink_parquet(path)


def _write_gcp_jsonl(out: Path, path: Path) -> None:
    """The GCP export of :func:`_write_gcp` extracted to JSONL, as BigQuery writes it (usage times as text)."""
    parquet = out / "gcp-parquet" / f"{START:%Y-%m}" / "billing_export.parquet"
    if not parquet.exists():
        _write_gcp(out, parquet)
    path.parent.mkdir(parents=True)
    times = pl.col("usage_start_time", "usage_end_time").dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    pl.scan_parquet(parquet).with_columns(times).sink_ndjson(path)


def _write_azure(out: Path, path: Path) -> None:
    """Each CUR line as an amortized Azure cost line: its amortized cost, a Savings Plan's covered usage
    priced as such, its tags a JSON object (the generator's keys and values need no escaping)."""
    from cost_pipeline.lib.billing.amortize import effective_cost

    path.parent.mkdir(parents=True)
    as_json = pl.concat_str(pl.lit("{"), pl.col("resource_tags").cast(TAG_ENTRIES).list.eval(
        pl.concat_str(pl.lit('"'), LABEL_KEY, pl.lit('": "'), pl.element().struct.field("value"), pl.lit('"'))).list.join(","), pl.lit("}"))
    covered = pl.col("line_item_line_item_type") == "SavingsPlanCoveredUsage"
    _sink_csv_gz(_cur_day(out).select(
        Date=pl.col("line_item_usage_start_date").dt.strftime("%m/%d/%Y"), BillingAccountId=pl.col("bill_payer_account_id"),
        SubscriptionId=pl.col("line_item_usage_account_id"), MeterCategory=pl.col("line_item_product_code"),
        MeterName=pl.col("line_item_usage_type"), ResourceLocation=pl.col("product_region_code"), ResourceId=pl.col("line_item_resource_id"),
        Quantity=pl.col("line_item_usage_amount"), CostInBillingCurrency=effective_cost().cast(pl.Float64),
        PaygCostInBillingCurrency=pl.col("pricing_public_on_demand_cost"), BillingCurrency=pl.col("line_item_currency_code"),
        ChargeType=pl.lit("Usage"), PricingModel=pl.when(covered).then(pl.lit("SavingsPlan")).otherwise(pl.lit("OnDemand")),
        InvoiceId=pl.col("bill_invoice_id"), Tags=as_json,
    ), path)


def _in_child(make, *args) -> None:
    """``make(*args)`` in a process of its own: what generating a 10 M-line file holds is never counted
    against the ingest timed after it (it stays with the process, for the allocator to reuse)."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=make, args=args)
    child.start()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"generating {args[-1]} failed ({child.exitcode})")


def _write_focus(out: Path, kind: str, path: Path) -> None:
    from cost_pipeline.lib.billing.amortize import charge_category, effective_cost

    path.parent.mkdir(parents=True)
    focus = _cur_day(out).select(
        BillingAccountId=pl.col("bill_payer_account_id"), SubAccountId=pl.col("line_item_usage_account_id"), ChargeCategory=charge_category(),
        ChargePeriodStart=pl.col("line_item_usage_start_date"), ChargePeriodEnd=pl.col("line_item_usage_end_date"),
        ServiceName=pl.col("line_item_product_code"), SkuId=pl.col("line_item_usage_type"), RegionId=pl.col("product_region_code"),
        ResourceId=pl.col("line_item_resource_id"), ConsumedQuantity=pl.col("line_item_usage_amount"),
        ListCost=pl.col("pricing_public_on_demand_cost"), BilledCost=pl.col("line_item_unblended_cost"),
        EffectiveCost=effective_cost().cast(pl.Float64), BillingCurrency=pl.col("line_item_currency_code"),
        InvoiceId=pl.col("bill_invoice_id"), ProviderName=pl.lit("AWS"), Tags=pl.col("resource_tags"),
    )
    if kind == "parquet":
        focus.sink_parquet(path)
    else:  # the generator's tag keys and values need no JSON escaping
        entry = pl.concat_str(pl.lit('"'), pl.element().struct.field("key"), pl.lit('": "'), pl.element().struct.field("value"), pl.lit('"'))
        as_json = pl.concat_str(pl.lit("{"), pl.col("Tags").cast(TAG_ENTRIES).list.eval(entry).list.join(", "), pl.lit("}"))
        _sink_csv_gz(focus.with_columns(as_json.alias("Tags")), path)


GCP_CREDIT = pl.Struct({"name": pl.String, "amount": pl.Float64, "type": pl.String})
TAG_ENTRIES = pl.List(pl.Struct({"key": pl.String, "value": pl.String}))


def _sink_csv_gz(frame: pl.LazyFrame, path: Path) -> None:
    text = path.with_suffix("")
    frame.sink_csv(text)
    with open(text, "rb") as raw, gzip.open(path, "wb", compresslevel=1) as packed:
        shutil.copyfileobj(raw, packed, 1 << 20)
    text.unlink()


def legacy_benchmark(out: Path, product_columns: int = 0) -> list[str]:
    """The bench's CUR day as legacy CUR deliveries: Parquet (the Athena-ready one: CUR 2.0's column names
    and types, a ``resource_tags_<key>`` text column per tag instead of the map) and CSV.gz (AWS's
    default), each streamed and read whole. ``product_columns``: as many ``product_<attribute>`` text
    columns more, none of which the reader reads (a real legacy CUR file has hundreds)."""
    tables = []
    for kind in ("parquet", "csv.gz"):
        wide = f"-{product_columns}-product-columns" if product_columns else ""
        path = out / f"legacy-{kind.replace('.', '-')}{wide}" / f"acme-00001.{kind}"
        if not path.exists():
            _in_child(_write_legacy, out, kind, product_columns, path)
        source = BillingSource(name="legacy", format="aws_cur_legacy", uri=str(path.parent))
        what = f"a legacy CUR {kind} delivery" + (f" with {product_columns} product columns more" if product_columns else "")
        tables += _export_benchmark(out, what, "--legacy" + (f" --legacy-product-columns {product_columns}" if product_columns else ""), source, path,
                                    LEGACY_PEER[kind]) + [""]
    return tables[:-1]


def _write_legacy(out: Path, kind: str, product_columns: int, path: Path) -> None:
    path.parent.mkdir(parents=True)
    cur = _cur_day(out)
    keys = cur.select(pl.col("resource_tags").map.keys().explode().drop_nulls().unique().sort()).collect().to_series().to_list()
    maps = [c for c, t in cur.collect_schema().items() if isinstance(t, pl.Map)]  # other maps have no legacy column here
    product = [pl.concat_str(pl.lit(f"attribute {j} of "), pl.col("line_item_usage_type")).alias(f"product_attribute_{j}") for j in range(product_columns)]
    legacy = cur.select(pl.exclude(maps), *(pl.col("resource_tags").map.get(k).alias(f"resource_tags_{k}") for k in keys), *product)
    if kind == "parquet":
        legacy.sink_parquet(path)
    else:
        _sink_csv_gz(legacy, path)


def _cur_day(out: Path) -> pl.LazyFrame:
    return pl.scan_parquet(sorted((out / "billing" / "aws" / "data").rglob("*.parquet")))


def _export_benchmark(out: Path, what: str, flag: str, source: BillingSource, path: Path, peer: str) -> list[str]:
    """The ingest of the bench's day delivered as ``what`` (streamed), against DuckDB's ``peer`` query on
    the same file and against the file read whole."""
    import duckdb

    from cost_pipeline.lib.billing import spill

    shutil.rmtree(spill.ROOT, ignore_errors=True)  # cold: a text export's parsed copy is made within the timed ingest
    meter = Meter()
    target = out / f"{source.name}_cost_lines.parquet"
    child = subprocess.run([sys.executable, "-c", EXPORT_INGEST, source.format, source.name, source.uri, START.isoformat(), str(target)],
                           capture_output=True, text=True)
    if child.returncode:
        raise RuntimeError(f"the ingest of {path} failed: {child.stderr[-2000:]}")
    ingest, peak, effective = json.loads(child.stdout.splitlines()[-1])
    meter.record("ingest of the day, streamed, in a process of its own as a run's step (text: parsed once into a local copy)", ingest, peak)
    lines = pl.scan_parquet(target).select(pl.len()).collect().item()
    target.unlink()
    sql = peer.format(path=path, day=START, next=START + dt.timedelta(days=1))
    duck = meter.run("peer: DuckDB normalize + direct attribution, the same file", lambda: duckdb.connect().sql(sql).fetchall())
    ours, theirs = Decimal(effective), sum(r[-2] for r in duck)
    assert ours == theirs and sum(r[-1] for r in duck) == lines, f"DuckDB and the pipeline disagree on {path}: {theirs} vs {ours}"
    peer_secs = meter.results[1][1]
    return [f"The same day as {what} ({lines:,} lines, `{flag}`; effective cost checked equal to DuckDB's: {ours:.2f}; "
            f"the ingest {ingest / peer_secs:.2f}× DuckDB's query):", "", "| format | seconds | peak RSS GiB |", "|---|---|---|",
            *(f"| {name} | {secs:.2f} | {rss / 2**30:.2f} |" for name, secs, rss in meter.results), _whole_read(path, source)]


# the ingest of an export day in a process of its own (the bench's process holds what its earlier stages
# and DuckDB's queries left): (seconds, peak RSS bytes, effective cost)
EXPORT_INGEST = """
import cost_pipeline, pandas, datetime as dt, json, sys, time
from pathlib import Path
from cost_pipeline.config import BillingSource
from cost_pipeline.lib.billing.write_day import ingest_days
from cost_pipeline.lib.storage import Storage
fmt, name, uri, day, target = sys.argv[1:]
day = dt.date.fromisoformat(day)
start = time.perf_counter()
sums, _ = ingest_days([BillingSource(name=name, format=fmt, uri=uri)], [day], lambda _: Storage(), {day: Path(target)})
# the process's own peak (VmHWM): ru_maxrss keeps the forking parent's size across exec
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) * 1024
print(json.dumps([time.perf_counter() - start, peak, str(sums["effective_cost"].sum())]))
"""

WHOLE_READ = """
import sys
from pathlib import Path
from cost_pipeline.config import BillingSource
from cost_pipeline.lib.billing.sources import FORMATS, with_content_ids
fmt, name, path = sys.argv[1], sys.argv[2], Path(sys.argv[3])
reader = FORMATS[fmt]
lines = reader.read(path, str(path), path.name, BillingSource(name=name, format=fmt, uri=str(path.parent)))
print((with_content_ids(lines) if reader.content_ids else lines).height)
"""


def _whole_read(path: Path, source: BillingSource, limit: int = 16 * 2**30) -> str:
    """The file read whole, as the reader does for files it cannot stream, in a process of its own that
    is stopped above ``limit`` (a 10 M-line legacy CUR file read whole filled this machine's 24 GiB)."""
    child = subprocess.Popen([sys.executable, "-c", WHOLE_READ, source.format, source.name, str(path)], stdout=subprocess.PIPE, text=True)
    start, peak = time.perf_counter(), 0
    while child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/statm") as fh:
                peak = max(peak, int(fh.read().split()[1]) * PAGE)
        except (FileNotFoundError, ProcessLookupError):
            pass
        if peak > limit:
            child.kill()
            child.wait()
            return f"| the file read whole (as CSV or text-typed files were): stopped above {limit / 2**30:.0f} GiB | {time.perf_counter() - start:.2f} | > {peak / 2**30:.2f} |"
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if child.returncode:
        raise RuntimeError(f"the whole read of {path} failed ({child.returncode})")
    return f"| the file read whole (as CSV or text-typed files were), a process of its own | {wall:.2f} | {peak / 2**30:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines-per-day", type=int, default=1_000_000)
    parser.add_argument("--pods", type=int, default=20_000, help="pods in the usage extracts (0: the sample's namespaces only)")
    parser.add_argument("--step-seconds", type=int, default=300)
    parser.add_argument("--series-lines", action="store_true", help="write the pods' extracts one series per line (.ndjson)")
    parser.add_argument("--stream-documents-above-mb", type=float, default=None,
                        help="usage extract documents above this size are streamed (default: the config's usage.stream_documents_above_mb)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--focus", action="store_true", help="also time the day as FOCUS exports, Parquet and CSV.gz (streamed, and read whole)")
    parser.add_argument("--legacy", action="store_true", help="also time the day as legacy CUR deliveries, Parquet and CSV.gz (streamed, and read whole)")
    parser.add_argument("--gcp", action="store_true", help="also time the day as a GCP billing export in Parquet (streamed, and read whole)")
    parser.add_argument("--gcp-jsonl", action="store_true", help="also time the day as a GCP billing export in JSONL (streamed, and read whole)")
    parser.add_argument("--azure", action="store_true", help="also time the day as an Azure cost details export in CSV.gz (streamed, and read whole)")
    parser.add_argument("--legacy-product-columns", type=int, default=0,
                        help="with --legacy: as many product columns more in the legacy deliveries, none of them read (real files have hundreds)")
    parser.add_argument("--backfill-days", type=int, default=0, help="also time an N-day single-run backfill at --backfill-lines per day")
    parser.add_argument("--backfill-lines", type=int, default=1_000_000)
    parser.add_argument("--backfill-parts", type=int, default=0, help="deliver each backfill month as N files holding every day (as AWS does)")
    parser.add_argument("--backfill-unique-days", type=int, default=0,
                        help="generate only N days of the backfill and fill the rest with their copies, dates shifted (a year in minutes)")
    parser.add_argument("--reports-copies", type=int, default=0,
                        help="after the backfill, time the reports job over its days repeated N times (12 × 30 days: a year)")
    parser.add_argument("--report", default="BENCHMARKS.md")
    parser.add_argument("--out", default=None, help="keep the generated data here")
    args = parser.parse_args()
    shown = " ".join(sys.argv[1:])
    if args.out:  # the machine's own paths stay out of the committed report
        shown = shown.replace(args.out, "DIR")
    if args.report != "BENCHMARKS.md":
        shown = shown.replace(args.report, "FILE")
    lines = [f"## {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: `bench.py {shown}`", "", f"Machine: {machine()}.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        table = day_benchmark(root / "day", args.lines_per_day, args.pods, args.step_seconds, args.repeat, args.series_lines,
                              args.stream_documents_above_mb)
        lines += table
        if args.focus:
            lines += ["", *focus_benchmark(root / "day")]
        if args.legacy:
            lines += ["", *legacy_benchmark(root / "day", args.legacy_product_columns)]
        for kind in ("gcp", "gcp_jsonl", "azure"):
            if getattr(args, kind):
                lines += ["", *export_benchmark(root / "day", kind)]
        if args.backfill_days:
            lines += ["", *backfill_benchmark(root / "backfill", args.backfill_days, args.backfill_lines, args.backfill_parts, args.backfill_unique_days)]
            if args.reports_copies:
                lines += ["", *reports_benchmark(root / "backfill", args.backfill_days, args.reports_copies)]
    text = "\n".join(lines) + "\n"
    print(text)
    report = Path(args.report)
    header = "# Benchmarks\n\nWritten by `make bench` (`benchmarks/bench.py`); newest run last. Ratios are measured within one run.\n\n"
    report.write_text((report.read_text() if report.exists() else header) + "\n" + text)


if __name__ == "__main__":
    main()
