"""The Vega-Lite spec of a team dashboard (built with Altair): filters that change every number on it.

Money in the browser stays exact: each row carries its amount as two integers, ``hi`` (whole
micro-units, floored) and ``lo`` (the remaining 10^-12 units, 0 ≤ lo < 10^6), which JavaScript adds
without error; :func:`exact_cents` turns the sums into cents rounded half-to-even, the same figure
Python's Decimal gives. Float sums of amounts would be off by a cent now and then.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from cost_pipeline.lib.safe_output import JsonText, display_text

FILTERS = {"month": "Month", "project": "Project", "workload_type": "Workload type", "environment": "Environment"}
NONE = "(none)"


def split_units(frame: pl.DataFrame, amount: str = "amount") -> pl.DataFrame:
    units = (pl.col(amount) * pl.lit(10**12)).cast(pl.Int128)
    hi = units // 1_000_000
    return frame.with_columns(hi=hi.cast(pl.Int64), lo=(units - hi * 1_000_000).cast(pl.Int64))


def exact_cents(groupby: list[str], prefix: str = "", extra: list[dict] = ()) -> list[dict]:
    """Vega-Lite transforms: sum ``hi``/``lo`` per group, then ``<prefix>cents`` and ``<prefix>usd``."""
    p = prefix
    return [
        {"aggregate": [{"op": "sum", "field": f"{p}hi", "as": f"{p}hi"}, {"op": "sum", "field": f"{p}lo", "as": f"{p}lo"}, *extra], "groupby": groupby},
        {"calculate": f"floor(datum['{p}lo'] / 1e6)", "as": f"{p}carry"},
        {"calculate": f"datum['{p}hi'] + datum['{p}carry']", "as": f"{p}micro"},
        {"calculate": f"datum['{p}lo'] - datum['{p}carry'] * 1e6", "as": f"{p}rest"},
        {"calculate": f"floor(datum['{p}micro'] / 1e4)", "as": f"{p}floor"},
        {"calculate": f"(datum['{p}micro'] - datum['{p}floor'] * 1e4) * 1e6 + datum['{p}rest']", "as": f"{p}rem"},
        {"calculate": f"datum['{p}floor'] + (datum['{p}rem'] > 5e9 || (datum['{p}rem'] == 5e9 && datum['{p}floor'] % 2 != 0) ? 1 : 0)", "as": f"{p}cents"},
        {"calculate": f"datum['{p}cents'] / 100", "as": f"{p}usd"},
    ]


def _filter(names: list[str]) -> str:
    return " && ".join(f"({n} == null || datum.{n} == {n})" for n in names)


def rows_for_browser(detail: pl.DataFrame, kind: str, with_team: bool = False) -> pl.DataFrame:
    """The rows a dashboard embeds: display-safe text, ISO days, integer amount parts. A team's page
    leaves the team out (every row is its own); the platform page keeps it."""
    text = [c for c in ("project", "workload_type", "environment", "experiment_id", "pool") if c in detail.columns]
    return split_units(detail).select(
        kind=pl.lit(kind),
        day=pl.col("date").dt.strftime("%Y-%m-%d"),
        dayn=pl.col("date").cast(pl.Int32),
        month=pl.col("date").dt.strftime("%Y-%m"),
        allocation="allocation",
        currency="currency",
        segment=pl.when(pl.col("allocation") == "shared").then(pl.lit("shared: ") + pl.col("pool").fill_null("")).otherwise(pl.col("workload_type").fill_null(NONE)),
        **{c: pl.col(c).fill_null(NONE) for c in text},
        driver=pl.col("driver") if "driver" in detail.columns else pl.lit(None, pl.String),
        **({"team": pl.col("team")} if with_team else {}),
        hi="hi",
        lo="lo",
    ).pipe(_displayed, [*text, "segment", *(["team"] if with_team else [])])


def experiment_rows(detail: pl.DataFrame) -> pl.DataFrame:
    """The top-experiments table's own rows: one per experiment × project × month × workload type ×
    environment × currency, its days with cost as lists of day numbers and amount parts, which the
    browser flattens to count distinct days exactly under any filter. The day-grain rows repeated
    every text field per experiment and day: 42 MB per team page for 30 days of 400 runs a day."""
    keys = ["experiment_id", "project", "workload_type", "environment", "currency"]
    daily = detail.filter(pl.col("experiment_id").is_not_null()).group_by(*keys, "date").agg(pl.col("amount").sum())
    return (
        split_units(daily).sort("date").group_by(*keys, month=pl.col("date").dt.strftime("%Y-%m"), maintain_order=True)
        .agg(days=pl.col("date").cast(pl.Int32), his="hi", los="lo")
        .with_columns(pl.col(c).fill_null(NONE) for c in keys[1:4])
        .pipe(_displayed, keys[:4])
        .sort("month", "experiment_id", "project")
    )


def _displayed(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """:func:`display_text` once per distinct value, here, then replaced in: called per element from
    Polars' threads it waited for the GIL each time (14 s for 3,000 values in a 30-day report run)."""
    mapped = []
    for column in columns:
        values = frame[column].unique().drop_nulls().to_list()
        mapped.append(pl.col(column).replace(values, [display_text(v) for v in values]))
    return frame.with_columns(mapped)


def team_spec(rows: JsonText, experiments: JsonText, options: dict[str, list[str]], currencies: list[str], month: str) -> dict:
    """One page-wide spec: KPIs, the stacked chart, the daily trend, top experiments, pool shares.
    ``rows``: :func:`rows_for_browser` without experiments; ``experiments``: :func:`experiment_rows`."""
    data = alt.Data(name="rows")  # one copy of the rows, in the spec's top-level datasets
    params = [
        alt.param(name="currency", value=currencies[0], bind=alt.binding_select(options=currencies, name="Currency ", element="#filters")),
        *[
            alt.param(name=n, value=month if n == "month" else None,
                      bind=alt.binding_select(options=[None, *options[n]], labels=["All", *options[n]], name=f"{label} ", element="#filters"))
            for n, label in FILTERS.items()
        ],
    ]
    mine = f"datum.kind == 'team' && datum.currency == currency && {_filter(list(FILTERS))}"
    kpi = alt.Chart(data, transform=[
        {"filter": mine},
        {"calculate": "datum.allocation == 'shared' ? datum.hi : 0", "as": "shi"},
        {"calculate": "datum.allocation == 'shared' ? datum.lo : 0", "as": "slo"},
        *exact_cents([], extra=[{"op": "sum", "field": "shi", "as": "shi"}, {"op": "sum", "field": "slo", "as": "slo"}])[:1],
        *exact_cents([])[1:],
        *[t for t in exact_cents([], "s")[1:]],
        {"calculate": "'Total ' + format(datum.usd, ',.2f') + ' ' + currency"
                      " + '   direct ' + format((datum.cents - datum.scents) / 100, ',.2f')"
                      " + '   shared platform fees ' + format(datum.susd, ',.2f')", "as": "label"},
    ]).mark_text(align="left", fontSize=18, fontWeight="bold").encode(x=alt.value(0), text="label:N").properties(width=700, height=30, name="total")

    stacked = alt.Chart(data, transform=[{"filter": mine}, *exact_cents(["project", "segment"])]).mark_bar().encode(
        x=alt.X("project:N", title="Project", sort="-y"),
        y=alt.Y("usd:Q", title="Cost", stack="zero"),
        color=alt.Color("segment:N", title="Workload type / shared pool", legend=alt.Legend(orient="right")),
        tooltip=["project:N", "segment:N", alt.Tooltip("usd:Q", format=",.2f", title="cost")],
    ).properties(width=520, height=260, title="Cost per project, by workload type; shared platform fees as their own segments")

    trend = alt.Chart(data, transform=[{"filter": mine}, *exact_cents(["day"])]).mark_line(point=True).encode(
        x=alt.X("day:T", title="Day", axis=alt.Axis(format="%b %d", tickCount="day")), y=alt.Y("usd:Q", title="Cost per day"),
        tooltip=[alt.Tooltip("day:T"), alt.Tooltip("usd:Q", format=",.2f", title="cost")],
    ).properties(width=520, height=180, title="Daily cost")

    runs = _table(
        alt.Data(name="experiments"),
        [{"filter": f"datum.currency == currency && {_filter(list(FILTERS))}"},
         {"flatten": ["days", "his", "los"], "as": ["dayn", "hi", "lo"]},
         *exact_cents(["experiment_id", "project"], extra=[{"op": "min", "field": "dayn", "as": "first"}, {"op": "max", "field": "dayn", "as": "last"},
                                                            {"op": "distinct", "field": "dayn", "as": "days"}]),
         {"calculate": "utcFormat(datum.first * 864e5, '%Y-%m-%d')", "as": "first_day"},
         {"calculate": "utcFormat(datum.last * 864e5, '%Y-%m-%d')", "as": "last_day"},
         {"calculate": "format(datum.usd, ',.2f')", "as": "cost"}],
        [("experiment_id", "Experiment"), ("project", "Project"), ("first_day", "First day"), ("last_day", "Last day"), ("days", "Days"), ("cost", "Cost")],
        "Top experiments (training runs) by cost",
    )

    pool_mine = f"datum.kind == 'team' && datum.allocation == 'shared' && datum.currency == currency && {_filter(list(FILTERS))}"
    pools = _table(
        data,
        [{"filter": "datum.pool != '(none)' && datum.currency == currency && (month == null || datum.month == month)"},
         {"calculate": f"({pool_mine}) ? datum.hi : 0", "as": "thi"}, {"calculate": f"({pool_mine}) ? datum.lo : 0", "as": "tlo"},
         {"calculate": "datum.kind == 'pool' ? datum.hi : 0", "as": "phi"}, {"calculate": "datum.kind == 'pool' ? datum.lo : 0", "as": "plo"},
         *exact_cents(["pool", "driver"], "t", extra=[{"op": "sum", "field": "phi", "as": "phi"}, {"op": "sum", "field": "plo", "as": "plo"}]),
         *exact_cents([], "p")[1:],
         {"filter": "datum.tcents != 0"},
         {"calculate": "format(datum.tusd, ',.2f')", "as": "cost"},
         {"calculate": "datum.pcents == 0 ? '' : format(datum.tcents / datum.pcents, '.1%') + ' of ' + format(datum.pusd, ',.2f')", "as": "share"}],
        [("pool", "Pool"), ("cost", "Your cost"), ("share", "Your share of the pool"), ("driver", "Split by")],
        "Shared pools: your share and why", sort="tcents",
    )
    chart = alt.vconcat(kpi, alt.hconcat(stacked, trend), runs, pools).add_params(*params).configure_view(stroke=None)
    spec = chart.to_dict(validate=False)  # one fixed structure, checked by the dashboard tests in a browser; validation took 1 s a team
    spec["datasets"] = {"rows": rows, "experiments": experiments}
    return spec


def _table(data, transform: list[dict], columns: list[tuple[str, str]], title: str, sort: str = "cents", limit: int = 10):
    ranked = [*transform, {"window": [{"op": "row_number", "as": "rank"}], "sort": [{"field": sort, "order": "descending"}]},
              {"filter": f"datum.rank <= {limit}"}]
    cells = [
        alt.Chart(data, transform=ranked).mark_text(align="left", limit=420 if field == "driver" else 200).encode(
            x=alt.value(0), y=alt.Y("rank:O", axis=None), text=alt.Text(f"{field}:N"),
        ).properties(width=420 if field == "driver" else 120, height=alt.Step(18), title=alt.TitleParams(label, fontSize=11, anchor="start"))
        for field, label in columns
    ]
    return alt.hconcat(*cells, spacing=4).properties(title=alt.TitleParams(title, anchor="start", fontSize=14))
