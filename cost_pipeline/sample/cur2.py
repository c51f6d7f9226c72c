"""Synthetic AWS CUR 2.0 in the Data Exports layout, with ground truth for tests and demos.

Layout and column names follow the CUR 2.0 table dictionary: ``data/BILLING_PERIOD=YYYY-MM/``,
snake-case columns, ``resource_tags`` as ``map<string,string>`` whose keys are the user tags as CUR
2.0 writes them (``user_ml_team`` for ``ml-team``). Lines are generated per day in chunks with
numpy and streamed to Parquet row groups, so millions of lines per day never sit in memory at once.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cost_pipeline.sample import org

TAG_KEYS = {
    "team": "user_ml_team",
    "project": "user_ml_project",
    "workload_type": "user_ml_workload_type",
    "environment": "user_ml_environment",
    "experiment_id": "user_ml_experiment_id",
}
STR = pa.string()
TS = pa.timestamp("ms", tz="UTC")
MAP = pa.map_(pa.string(), pa.string())

CUR2_SCHEMA = pa.schema(
    [
        ("identity_line_item_id", STR),
        ("identity_time_interval", STR),
        ("bill_invoice_id", STR),
        ("bill_invoicing_entity", STR),
        ("bill_billing_entity", STR),
        ("bill_bill_type", STR),
        ("bill_payer_account_id", STR),
        ("bill_payer_account_name", STR),
        ("bill_billing_period_start_date", TS),
        ("bill_billing_period_end_date", TS),
        ("line_item_usage_account_id", STR),
        ("line_item_usage_account_name", STR),
        ("line_item_line_item_type", STR),
        ("line_item_usage_start_date", TS),
        ("line_item_usage_end_date", TS),
        ("line_item_product_code", STR),
        ("line_item_usage_type", STR),
        ("line_item_operation", STR),
        ("line_item_availability_zone", STR),
        ("line_item_resource_id", STR),
        ("line_item_usage_amount", pa.float64()),
        ("line_item_currency_code", STR),
        ("line_item_unblended_rate", STR),
        ("line_item_unblended_cost", pa.float64()),
        ("line_item_blended_cost", pa.float64()),
        ("line_item_line_item_description", STR),
        ("line_item_legal_entity", STR),
        ("pricing_public_on_demand_cost", pa.float64()),
        ("pricing_term", STR),
        ("pricing_unit", STR),
        ("product_region_code", STR),
        ("product_servicecode", STR),
        ("product", MAP),
        ("resource_tags", MAP),
        ("cost_category", MAP),
        ("savings_plan_savings_plan_a_r_n", STR),
        ("savings_plan_savings_plan_effective_cost", pa.float64()),
        ("savings_plan_savings_plan_rate", pa.float64()),
        ("savings_plan_total_commitment_to_date", pa.float64()),
        ("savings_plan_used_commitment", pa.float64()),
        ("reservation_reservation_a_r_n", STR),
        ("reservation_effective_cost", pa.float64()),
        ("reservation_unused_amortized_upfront_fee_for_billing_period", pa.float64()),
        ("reservation_unused_recurring_fee", pa.float64()),
    ]
)

SP_ARN = f"arn:aws:savingsplans::{org.PAYER_ACCOUNT}:savingsplan/5f1c8a3e-0c6b-4d7e-9a51-2f0c6d9e1b7a"
SP_DISCOUNT = 0.72  # effective rate as a share of on-demand for covered EC2/SageMaker usage
SP_UTILIZATION = 0.93  # share of the hourly commitment that covered usage consumes

# Defects injected into tags: (name, expected quarantine reason or None when normalization repairs it)
DEFECTS = [
    ("drop:team", "missing:ml-team"),
    ("drop:all", "missing:ml-team"),
    ("drop:project", "missing:ml-project"),
    ("drop:environment", "missing:ml-environment"),
    ("drop:workload_type", "missing:ml-workload-type"),
    ("unknown_team", "unknown_team"),
    ("typo_team", "unknown_team"),
    ("bad_environment", "invalid:ml-environment"),
    ("bad_workload", "invalid:ml-workload-type"),
    ("wrong_case", None),
]


FEES_PER_DAY = 24  # hourly SavingsPlanRecurringFee lines


@dataclass
class SampleSpec:
    start: dt.date
    days: int
    lines_per_day: int
    seed: int = 7
    bad_tag_share: float = 0.08
    anomalies: int = 3
    chunk: int = 200_000
    exact_lines: bool = False  # lines_per_day counts every line of the day (Savings Plan negations and fees too), not the usage lines
    anomaly_days: list[tuple[dt.date, str, float]] = field(default_factory=list)  # one-day spikes
    level_shifts: list[tuple[dt.date, str, float]] = field(default_factory=list)  # from the day on, the team costs factor×
    new_spend: list[tuple[dt.date, str, str]] = field(default_factory=list)  # from the day on, a team's training runs in a new project


def _choice(rng: np.random.Generator, items: list[str], n: int, p=None) -> np.ndarray:
    return np.asarray(items, dtype=object)[rng.choice(len(items), size=n, p=p)]


def _map_array(columns: list[tuple[str, np.ndarray]]) -> pa.MapArray:
    """Build ``map<string,string>`` rows from per-key value columns (None = key absent)."""
    len(columns[0][1]) if columns else 0
    keys = np.array([k for k, _ in columns], dtype=object)
    values = np.stack([v for _, v in columns], axis=1) if columns else np.empty((0, 0), dtype=object)
    present = values != None  # noqa: E711 - elementwise test on an object array
    counts = present.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    flat_keys = np.broadcast_to(keys, values.shape)[present]
    flat_values = values[present]
    return pa.MapArray.from_arrays(pa.array(offsets), pa.array(flat_keys, STR), pa.array(flat_values, STR))


def _day_chunk(rng: np.random.Generator, day: dt.date, n: int, first_index: int, spec: SampleSpec) -> tuple[pa.Table, list[dict]]:
    """``n`` usage lines of one day (before Savings Plan negations are added)."""
    kind = rng.choice(4, size=n, p=[0.78, 0.10, 0.06, 0.06])  # 0 team workload, 1 EKS, 2 pool lines, 3 data lake
    team = _choice(rng, org.WORKLOAD_TEAMS, n, p=[0.24, 0.24, 0.2, 0.2, 0.12])
    workload = _choice(rng, org.WORKLOADS, n, p=[0.3, 0.35, 0.2, 0.15])
    env = _choice(rng, org.ENVIRONMENTS, n, p=[0.25, 0.15, 0.6])
    project = np.array([org.TEAMS[t]["projects"][i] for t, i in zip(team, rng.integers(0, 2, n))], dtype=object)
    account = np.array([org.TEAMS[t]["account"] for t in team], dtype=object)
    experiment = np.where(
        workload == "training",
        np.char.add("exp-", np.char.zfill(rng.integers(1, 400, n).astype(str), 4)).astype(object),
        None,
    )
    service = np.empty(n, dtype=object)
    usage_type = np.empty(n, dtype=object)
    resource = np.empty(n, dtype=object)
    median = np.empty(n)
    extra_eks = np.full(n, None, dtype=object)
    svc_pick = rng.integers(0, 8, n)
    for w, options in org.WORKLOAD_SERVICES.items():
        sel = (kind == 0) & (workload == w)
        pick = svc_pick[sel] % len(options)
        for i, (svc, ut, prefix, med) in enumerate(options):
            s = np.flatnonzero(sel)[pick == i]
            service[s], usage_type[s], median[s] = svc, ut, med
            resource[s] = [prefix.format(acct=a) + f"{team[j][:5]}-{project[j][:6]}-{j % 97:02d}" for j, a in zip(s, account[s])]
    # shared platform lines: tagged to the platform team; the allocation issue's pools select them
    for k, pool_names in ((1, ["eks-shared"]), (2, ["monitoring", "feature-store"]), (3, ["data-lake"])):
        sel = np.flatnonzero(kind == k)
        names = _choice(rng, pool_names, len(sel))
        for j, pname in zip(sel, names):
            opts = org.SHARED_LINES[pname]
            svc, ut, rid, med, extra = opts[int(rng.integers(0, len(opts)))]
            service[j], usage_type[j], median[j] = svc, ut, med
            resource[j] = rid.format(acct=org.PLATFORM_ACCOUNT) + ("" if rid.startswith("arn") or rid == org.DATA_LAKE_BUCKET else f"{j % 40:03d}")
            team[j], project[j], account[j] = "platform", pname, org.PLATFORM_ACCOUNT
            workload[j], env[j], experiment[j] = ("inference" if pname != "data-lake" else "data-processing"), "prod", None
            extra_eks[j] = extra.get("aws_eks_cluster_name")
    hours = rng.integers(0, 24, n)
    start = np.datetime64(day.isoformat(), "ms") + hours.astype("timedelta64[h]")
    cost = np.round(median * rng.lognormal(0.0, 0.6, n), 8)
    for a_day, a_team, factor in spec.anomaly_days:
        if a_day == day:
            cost = np.where(team == a_team, np.round(cost * factor, 8), cost)
    for s_day, s_team, factor in spec.level_shifts:
        if day >= s_day:
            cost = np.where(team == s_team, np.round(cost * factor, 8), cost)
    for n_day, n_team, new_project in spec.new_spend:
        if day >= n_day:
            moved = (team == n_team) & (workload == "training") & (kind == 0)
            project = np.where(moved, new_project, project)
            cost = np.where(moved, np.round(cost * 1.5, 8), cost)
    is_ec2_like = np.isin(service, ["AmazonEC2", "AmazonSageMaker"]) & (kind <= 1)
    covered = is_ec2_like & (rng.random(n) < 0.45)
    line_type = np.where(covered, "SavingsPlanCoveredUsage", "Usage").astype(object)

    # tag defects, with the ground truth the compliance stage must reproduce
    defect_idx = rng.choice(len(DEFECTS), size=n)
    defective = rng.random(n) < spec.bad_tag_share
    tags = {"team": team.copy(), "project": project.copy(), "workload_type": workload.copy(), "environment": env.copy(), "experiment_id": experiment.copy()}
    truth = []
    ids = np.array([f"{day:%Y%m%d}{first_index + i:09d}" for i in range(n)], dtype=object)
    for i in np.flatnonzero(defective):
        name, reason = DEFECTS[defect_idx[i]]
        if name.startswith("drop:"):
            cols = list(tags) if name == "drop:all" else [name.split(":")[1]]
            for c in cols:
                tags[c][i] = None
        elif name == "unknown_team":
            tags["team"][i] = "marketing-analytics"
        elif name == "typo_team":
            tags["team"][i] = {"fraud-detection": "fraud-detecton", "personalization": "personalisation"}.get(team[i], team[i] + "s")
        elif name == "bad_environment":
            tags["environment"][i] = "production"
        elif name == "bad_workload":
            tags["workload_type"][i] = "batch"
        elif name == "wrong_case":
            tags["team"][i] = f" {team[i].title()} "
        # mirror the demo config: shared-pool lines are paid by their pool's driver, whatever their
        # tags; on direct lines the account virtual tag refills a dropped ml-team
        if kind[i] != 0:
            name, reason = f"{name}+pool", None
        elif name == "drop:team":
            name, reason = f"{name}+virtual_tag", None
        elif name == "drop:all":
            reason = "missing:ml-project"
        truth.append({"line_item_id": ids[i], "date": day.isoformat(), "defect": name, "expected_reason": reason})
    tag_cols = [(TAG_KEYS[c], v) for c, v in tags.items()]
    tag_cols.append(("aws_eks_cluster_name", extra_eks))
    usage_amount = np.round(rng.uniform(0.5, 1.0, n), 6)
    table = _cur_table(
        ids=ids, day=day, account=account, line_type=line_type, start=start, service=service,
        usage_type=usage_type, resource=resource, usage_amount=usage_amount, cost=cost,
        sp_effective=np.where(covered, np.round(cost * SP_DISCOUNT, 8), np.nan), tags=_map_array(tag_cols),
        invoice=invoice_id(day, spec),
    )
    negation = _negations(table, covered)
    # a negation line carries the covered line's tags, so it fails (or passes) with it
    failing = {t["line_item_id"]: t for t in truth}
    for base in negation["identity_line_item_id"].to_pylist():
        if base[:-1] in failing:
            truth.append({**failing[base[:-1]], "line_item_id": base})
    return pa.concat_tables([table, negation]), truth


def invoice_id(day: dt.date, spec: SampleSpec) -> str | None:
    """Months before the last generated month are invoiced (final); the last one is still estimated."""
    last = spec.start + dt.timedelta(days=spec.days - 1)
    return f"EUINUS{day:%y%m}-0001" if (day.year, day.month) < (last.year, last.month) else None


def _cur_table(*, ids, day, account, line_type, start, service, usage_type, resource, usage_amount, cost, sp_effective, tags, invoice=None) -> pa.Table:
    n = len(ids)
    period_start = dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC)
    period_end = (period_start + dt.timedelta(days=32)).replace(day=1)
    covered = line_type == "SavingsPlanCoveredUsage"
    nan_to_null = lambda a: pa.array(a, pa.float64(), from_pandas=True)  # noqa: E731 - NaN means absent
    cols = {
        "identity_line_item_id": pa.array(ids, STR),
        "identity_time_interval": pa.array([f"{day}T00:00:00Z/{day + dt.timedelta(days=1)}T00:00:00Z"] * n, STR),
        "bill_invoice_id": pa.array([invoice] * n, STR),
        "bill_invoicing_entity": pa.array(["Amazon Web Services, Inc."] * n, STR),
        "bill_billing_entity": pa.array(["AWS"] * n, STR),
        "bill_bill_type": pa.array(["Anniversary"] * n, STR),
        "bill_payer_account_id": pa.array([org.PAYER_ACCOUNT] * n, STR),
        "bill_payer_account_name": pa.array(["acme-ml-payer"] * n, STR),
        "bill_billing_period_start_date": pa.array([period_start] * n, TS),
        "bill_billing_period_end_date": pa.array([period_end] * n, TS),
        "line_item_usage_account_id": pa.array(account, STR),
        "line_item_usage_account_name": pa.array(account, STR),
        "line_item_line_item_type": pa.array(line_type, STR),
        "line_item_usage_start_date": pa.array(start, TS),
        "line_item_usage_end_date": pa.array(start + np.timedelta64(1, "h"), TS),
        "line_item_product_code": pa.array(service, STR),
        "line_item_usage_type": pa.array(usage_type, STR),
        "line_item_operation": pa.array(["RunInstances"] * n, STR),
        "line_item_availability_zone": pa.array(["us-east-1a"] * n, STR),
        "line_item_resource_id": pa.array(resource, STR),
        "line_item_usage_amount": pa.array(usage_amount, pa.float64()),
        "line_item_currency_code": pa.array(["USD"] * n, STR),
        "line_item_unblended_rate": pa.array(np.round(cost / usage_amount, 8).astype(str), STR),
        "line_item_unblended_cost": pa.array(cost, pa.float64()),
        "line_item_blended_cost": pa.array(cost, pa.float64()),
        "line_item_line_item_description": pa.array(usage_type, STR),
        "line_item_legal_entity": pa.array(["Amazon Web Services, Inc."] * n, STR),
        "pricing_public_on_demand_cost": pa.array(cost, pa.float64()),
        "pricing_term": pa.array(np.where(covered, "", "OnDemand"), STR),
        "pricing_unit": pa.array(["Hrs"] * n, STR),
        "product_region_code": pa.array(["us-east-1"] * n, STR),
        "product_servicecode": pa.array(service, STR),
        "product": _map_array([("region", np.full(n, "us-east-1", dtype=object))]),
        "resource_tags": tags,
        "cost_category": _map_array([]) if n == 0 else pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], STR), pa.array([], STR)),
        "savings_plan_savings_plan_a_r_n": pa.array(np.where(covered, SP_ARN, None), STR),
        "savings_plan_savings_plan_effective_cost": nan_to_null(sp_effective),
        "savings_plan_savings_plan_rate": nan_to_null(np.where(covered, np.round(cost * SP_DISCOUNT / usage_amount, 8), np.nan)),
        "savings_plan_total_commitment_to_date": pa.nulls(n, pa.float64()),
        "savings_plan_used_commitment": pa.nulls(n, pa.float64()),
        "reservation_reservation_a_r_n": pa.nulls(n, STR),
        "reservation_effective_cost": pa.nulls(n, pa.float64()),
        "reservation_unused_amortized_upfront_fee_for_billing_period": pa.nulls(n, pa.float64()),
        "reservation_unused_recurring_fee": pa.nulls(n, pa.float64()),
    }
    return pa.table(cols, schema=CUR2_SCHEMA)


def _negations(table: pa.Table, covered: np.ndarray) -> pa.Table:
    """SavingsPlanNegation lines: AWS cancels the on-demand charge of covered usage on the invoice."""
    neg = table.filter(pa.array(covered))
    n = neg.num_rows
    cost = neg["line_item_unblended_cost"].to_numpy()
    replace = {
        "identity_line_item_id": pa.array([f"{i}n" for i in neg["identity_line_item_id"].to_pylist()], STR),
        "line_item_line_item_type": pa.array(["SavingsPlanNegation"] * n, STR),
        "line_item_unblended_cost": pa.array(-cost, pa.float64()),
        "line_item_blended_cost": pa.array(-cost, pa.float64()),
        "pricing_public_on_demand_cost": pa.array(np.zeros(n), pa.float64()),
        "savings_plan_savings_plan_effective_cost": pa.nulls(n, pa.float64()),
    }
    for name, arr in replace.items():
        neg = neg.set_column(neg.schema.get_field_index(name), name, arr)
    return neg


def _recurring_fees(day: dt.date, used: float, spec: SampleSpec) -> pa.Table:
    """24 hourly SavingsPlanRecurringFee lines; the unused commitment is their effective cost."""
    n = FEES_PER_DAY
    used_hourly = np.full(n, round(used / n, 8))
    commitment = np.full(n, round(used / n / SP_UTILIZATION, 2))
    start = np.datetime64(day.isoformat(), "ms") + np.arange(n).astype("timedelta64[h]")
    table = _cur_table(
        ids=np.array([f"{day:%Y%m%d}fee{h:02d}" for h in range(n)], dtype=object), day=day,
        account=np.full(n, org.PAYER_ACCOUNT, dtype=object), line_type=np.full(n, "SavingsPlanRecurringFee", dtype=object),
        start=start, service=np.full(n, "ComputeSavingsPlans", dtype=object),
        usage_type=np.full(n, "ComputeSP:1yrNoUpfront", dtype=object), resource=np.full(n, SP_ARN, dtype=object),
        usage_amount=np.ones(n), cost=commitment, sp_effective=np.full(n, np.nan),
        tags=_map_array([("user_ml_team", np.full(n, None, dtype=object))]),
        invoice=invoice_id(day, spec),
    )
    table = table.set_column(table.schema.get_field_index("savings_plan_total_commitment_to_date"), "savings_plan_total_commitment_to_date", pa.array(commitment))
    return table.set_column(table.schema.get_field_index("savings_plan_used_commitment"), "savings_plan_used_commitment", pa.array(used_hourly))


EXPORT = "acme-ml-cur2"


def write_manifest(out: Path, period: str, files: list[str], bucket_prefix: str = "s3://acme-billing/cur2") -> Path:
    """The Data Exports manifest AWS writes once every data file of an execution is in place."""
    manifest = {
        "executionId": f"{period}-{len(files)}",
        "exportArn": f"arn:aws:bcm-data-exports:us-east-1:100000000001:export/{EXPORT}",
        "billingPeriod": period,
        "dataFiles": [f"{bucket_prefix}/{EXPORT}/data/BILLING_PERIOD={period}/{name}" for name in sorted(files)],
    }
    path = out / "metadata" / f"BILLING_PERIOD={period}" / f"{EXPORT}-Manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1))
    return path


def write_cur2(out: Path, spec: SampleSpec) -> list[dict]:
    """Write one Parquet file per day under its billing period, then each period's manifest; return
    the tag ground truth."""
    truth: list[dict] = []
    periods: dict[str, list[str]] = {}
    for offset in range(spec.days):
        day = spec.start + dt.timedelta(days=offset)
        rng = np.random.default_rng([spec.seed, day.toordinal()])
        folder = out / "data" / f"BILLING_PERIOD={day:%Y-%m}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{EXPORT}-{day.day:05d}.snappy.parquet"
        periods.setdefault(f"{day:%Y-%m}", []).append(path.name)
        tmp = path.with_name(f".{path.name}.tmp")
        sp_used = 0.0
        with pq.ParquetWriter(tmp, CUR2_SCHEMA, compression="snappy") as writer:
            # with exact_lines the usage lines, their negations (at most one each) and the fees come to
            # lines_per_day (one more at worst): a chunk asks for at most half of what is left
            first, left = 0, spec.lines_per_day - (FEES_PER_DAY if spec.exact_lines else 0)
            while left > 0:
                n = min(spec.chunk, max(1, left // 2) if spec.exact_lines else left)
                chunk, chunk_truth = _day_chunk(rng, day, n, first, spec)
                effective = chunk["savings_plan_savings_plan_effective_cost"].to_numpy(zero_copy_only=False)
                sp_used += float(np.nansum(effective))
                writer.write_table(chunk)
                truth.extend(chunk_truth)
                first, left = first + n, left - (chunk.num_rows if spec.exact_lines else n)
            fees = _recurring_fees(day, sp_used, spec)
            writer.write_table(fees)
            truth.extend(
                {"line_item_id": i, "date": day.isoformat(), "defect": "untaggable_commitment_fee", "expected_reason": "missing:ml-team"}
                for i in fees["identity_line_item_id"].to_pylist()
            )
        tmp.replace(path)
    for period, files in periods.items():
        write_manifest(out, period, files)
    return truth
