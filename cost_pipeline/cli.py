"""``cost-pipeline``: generate sample data, run a date range as one backfill, print the summary."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from cost_pipeline.config import CONFIG_ENV, ConfigError, load_settings


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _use_config(path: str | None) -> None:
    """Point the code location at ``--config`` before it is imported (partitions depend on it)."""
    if path:
        os.environ[CONFIG_ENV] = str(Path(path).resolve())


def cmd_sample(args: argparse.Namespace) -> int:
    from cost_pipeline.sample.generate import generate

    out = generate(Path(args.out), args.start, args.days, args.lines_per_day, args.seed)
    print(f"billing (CUR 2.0): {out['billing']}\nusage extracts:    {out['usage']}\nground truth:      {out['ground_truth']}")
    return 0


def _instance():
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _check_events(result, severity: str):
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.asset_check_evaluation_data
            if not data.passed and data.severity.value == severity:
                yield f"check {data.check_name} on {data.asset_key.to_user_string()}"


def _failed_steps(result) -> list[str]:
    """Failed steps and failed ERROR checks; WARN checks are reported but do not fail the command."""
    failures = [f"step {e.step_key}" for e in result.all_events if e.is_step_failure]
    return failures + list(_check_events(result, "ERROR"))


def _errors(result) -> list[tuple[str, object]]:
    """(step or "resources", error) of each failed step, or of the resources that could not start."""
    out = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            out.append((event.step_key, event.step_failure_data.error))
        elif event.event_type_value == "RESOURCE_INIT_FAILURE" and getattr(event.event_specific_data, "error", None):
            out.append(("resources", event.event_specific_data.error))
    return out


def _root_cause(error) -> str:
    """The innermost error of a step failure, one line: the file and problem, not Dagster's wrapper."""
    while error.cause is not None:
        error = error.cause
    message = error.message.strip().splitlines()[0] if error.message.strip() else error.cls_name or "unknown error"
    return message.removeprefix("dagster._core.definitions.events.Failure: ")


def _log_config(level: str) -> dict:
    """Dagster's console logger prints every event at DEBUG; operators want problems only."""
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def cmd_run(args: argparse.Namespace) -> int:
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    _use_config(args.config)
    settings = load_settings()
    if args.end < args.start:
        print(f"error: --end {args.end} is before --start {args.start}", file=sys.stderr)
        return 2
    if args.start < settings.partitions_start_date:
        print(f"error: --start {args.start} is before partitions_start_date {settings.partitions_start_date}", file=sys.stderr)
        return 2
    from cost_pipeline.definitions import defs as load_defs
    from cost_pipeline.defs.partitions import DAILY

    defs = load_defs()

    last = dt.date.fromisoformat(DAILY.get_last_partition_key())
    if args.end > last:
        print(f"error: --end {args.end} is after the last complete UTC day with a partition ({last})", file=sys.stderr)
        return 2
    instance = _instance()
    from cost_pipeline.defs.alerts.assets import NOTIFY_TAG

    tags = {ASSET_PARTITION_RANGE_START_TAG: args.start.isoformat(), ASSET_PARTITION_RANGE_END_TAG: args.end.isoformat()}
    if args.notify:
        tags[NOTIFY_TAG] = "true"
    selection = None
    if getattr(args, "rules_only", False):
        from dagster import AssetKey

        from cost_pipeline.defs.jobs import DAILY_ASSETS, RULES_INPUTS
        from cost_pipeline.lib.lake import Lake

        lake = Lake.from_settings(settings)
        days = [args.start + dt.timedelta(days=i) for i in range((args.end - args.start).days + 1)]
        for table in RULES_INPUTS:
            missing = [d.isoformat() for d in days if not lake.has_day(table, d)]
            if missing:
                print(f"error: --rules-only keeps {table}, but the lake lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: "
                      "run without --rules-only", file=sys.stderr)
                return 2
        selection = [AssetKey(a) for a in DAILY_ASSETS if a not in RULES_INPUTS]
    for job_name, job_tags in (("daily_costs_job", tags), ("reports_job", {})):
        job = defs.resolve_job_def(job_name)
        if selection and job_name == "daily_costs_job":
            # the assets report their checks day by day; a subset by assets alone would add each
            # check as a step of its own, re-reading every day (46 s of a year's rules change)
            job = job.get_subset(asset_selection=set(selection), asset_check_selection=set())
        result = job.execute_in_process(instance=instance, tags=job_tags, raise_on_error=False, run_config=_log_config(args.log_level))
        problems = _failed_steps(result)
        for warning in _check_events(result, "WARN"):
            print(f"  warning: {warning} did not pass (see the Dagster UI for details)")
        print(f"{job_name}: run {result.run_id} {'succeeded' if result.success and not problems else 'FAILED'}")
        if not result.success or problems:
            for problem in problems:
                print(f"  failed: {problem}", file=sys.stderr)
            for where, error in _errors(result):
                print(f"  {where}: {_root_cause(error)}", file=sys.stderr)
            return 1
    return cmd_summary(args, written=True)


def cmd_summary(args: argparse.Namespace, written: bool = False) -> int:
    """``written``: print the summary the reports job just wrote (a year's lake takes ~30 s to summarize)."""
    from cost_pipeline.lib.lake import Lake
    from cost_pipeline.lib.report_files import render_text, summarize, summary_text

    _use_config(args.config)
    settings = load_settings()
    lake = Lake.from_settings(settings)
    text = lake.read_file("reports", None, "summary.md") if written else None
    if text is not None:
        print(summary_text(text.decode("utf-8")))
    else:
        print(render_text(summarize(lake, settings.partitions_start_date)))
    print(f"Lake:       {lake.uri}")
    print(f"Reports:    {lake.location('reports', 'summary.md')} and {lake.location('reports', 'teams')}/<team>.csv")
    print(f"Dashboards: {lake.location('reports', 'dashboards', 'platform.html')} (links to every team's page)")
    if lake.is_local:
        for page in sorted((lake.root / "reports" / "dashboards").glob("*.html")):
            if page.name != "platform.html":
                print(f"            {page}")
    print(f"Statements: {lake.location('reports', 'statements')}/YYYY-MM/<team>.csv and .html ({settings.reports.mode})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import polars as pl

    from cost_pipeline.lib.evaluate import score
    from cost_pipeline.lib.lake import Lake

    _use_config(args.config)
    settings = load_settings()
    lake = Lake.from_settings(settings)
    truth_path = Path(args.truth)
    if not truth_path.exists():
        print(f"error: {truth_path}: no ground truth (cost-pipeline sample writes it)", file=sys.stderr)
        return 2
    if not lake.days("anomalies"):
        print(f"error: the lake at {lake.uri} has no anomalies yet; run the pipeline first", file=sys.stderr)
        return 2
    quality = score(lake.scan("anomalies").collect(), pl.read_csv(truth_path), lake.scan("team_cost_detail").collect())
    print(quality.text())
    return 0


def cmd_close_month(args: argparse.Namespace) -> int:
    from cost_pipeline.lib.lake import Lake
    from cost_pipeline.lib.month_close import close_month
    from cost_pipeline.lib.statements import StatementError

    _use_config(args.config)
    settings = load_settings()
    lake = Lake.from_settings(settings)
    try:
        written = close_month(lake, settings, args.month, args.allow_missing_days)
    except StatementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"closed {args.month}: its statements are final; later changes appear as adjustments on the next open month")
    for path in written:
        print(f"  {path}")
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    from cost_pipeline.lib.policies import write_policies

    _use_config(args.config)
    for name, path in write_policies(load_settings().tagging, Path(args.out)).items():
        print(f"{name:<28} {path}")
    return 0


def _preview(current, proposed, start: dt.date, end: dt.date, show_all: bool) -> str:
    from cost_pipeline.lib.lake import Lake
    from cost_pipeline.lib.rules_diff import allocate_days, diff_allocations, render_diff

    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    lake = Lake.from_settings(current)
    diff = diff_allocations(allocate_days(lake, current, days), allocate_days(lake, proposed, days))
    return render_diff(diff, current.rules_version, proposed.rules_version, show_all=show_all)


def cmd_rules_diff(args: argparse.Namespace) -> int:
    _use_config(args.config)
    if args.end < args.start:
        print(f"error: --end {args.end} is before --start {args.start}", file=sys.stderr)
        return 2
    try:
        print(_preview(load_settings(), load_settings(args.proposed), args.start, args.end, args.all))
    except FileNotFoundError as exc:
        print(f"error: {exc}; materialize cost_lines and usage for these days first", file=sys.stderr)
        return 2
    return 0


def cmd_rules_apply(args: argparse.Namespace) -> int:
    """Preview, adopt (the proposed file replaces the config, the old one kept beside it), backfill."""
    import shutil

    from cost_pipeline.config import bundled_config_path

    _use_config(args.config)
    target = Path(os.environ.get(CONFIG_ENV) or bundled_config_path())
    if target.resolve() == bundled_config_path().resolve():
        print("error: rules apply replaces your config file; pass --config FILE (or set COST_PIPELINE_CONFIG)", file=sys.stderr)
        return 2
    current, proposed = load_settings(), load_settings(args.proposed)
    if (proposed.lake_uri, proposed.partitions_start_date) != (current.lake_uri, current.partitions_start_date):
        print("error: the proposed file must keep lake_uri and partitions_start_date; only rules change here", file=sys.stderr)
        return 2
    if args.end < args.start:
        print(f"error: --end {args.end} is before --start {args.start}", file=sys.stderr)
        return 2
    try:
        print(_preview(current, proposed, args.start, args.end, False))
    except FileNotFoundError as exc:
        print(f"error: {exc}; materialize cost_lines and usage for these days first", file=sys.stderr)
        return 2
    if current.rules_version == proposed.rules_version:
        print("the proposed rules are the current rules; nothing to adopt")
        return 0
    if not args.yes:
        print("not adopted: re-run with --yes to adopt these rules and backfill the range")
        return 0
    backup = target.with_name(f"{target.name}.{current.rules_version}.bak")
    shutil.copyfile(target, backup)
    shutil.copyfile(args.proposed, target)
    print(f"adopted rules {proposed.rules_version} in {target} (previous rules kept in {backup}); backfilling {args.start} .. {args.end}")
    # the bill and the usage did not change: only what the rules decide is recomputed
    return cmd_run(argparse.Namespace(config=str(target), start=args.start, end=args.end, notify=False, log_level=args.log_level, rules_only=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cost-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sample = sub.add_parser("sample", help="write sample CUR 2.0 billing, usage extracts and ground truth")
    sample.add_argument("--days", type=int, default=60)
    sample.add_argument("--lines-per-day", type=int, default=5000)
    sample.add_argument("--out", default="data")
    sample.add_argument("--seed", type=int, default=7)
    sample.add_argument("--start", type=_date, default=dt.date(2026, 9, 1))
    sample.set_defaults(func=cmd_sample)

    run = sub.add_parser("run", help="materialize every daily asset for a date range as one single-run backfill")
    run.add_argument("--config")
    run.add_argument("--start", type=_date, required=True)
    run.add_argument("--end", type=_date, required=True, help="last day, inclusive")
    run.add_argument("--notify", action="store_true",
                     help="send Slack alerts and digests for past days too (a backfill sends nothing otherwise)")
    run.add_argument("--log-level", default="CRITICAL", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                     help="Dagster's console log; problems are summarized after the run whatever the level")
    run.add_argument("--rules-only", action="store_true",
                     help="recompute only what the tagging and allocation rules decide; cost_lines and usage in the lake are kept")
    run.set_defaults(func=cmd_run)

    summary = sub.add_parser("summary", help="print spend per team and the untagged share from the lake")
    summary.add_argument("--config")
    summary.set_defaults(func=cmd_summary)

    policies = sub.add_parser("policies", help="write AWS SCP and tag policy, Azure Policy and GCP constraint from the tag schema")
    policies.add_argument("--config")
    policies.add_argument("--out", default="policies")
    policies.set_defaults(func=cmd_policies)

    evaluate = sub.add_parser("evaluate", help="anomaly precision, recall, F1 and false alerts, and forecast MAPE, against ground truth")
    evaluate.add_argument("--config")
    evaluate.add_argument("--truth", default="data/ground_truth/anomalies.csv")
    evaluate.set_defaults(func=cmd_evaluate)

    close = sub.add_parser("close-month", help="make a month's chargeback statements final (later changes become adjustments)")
    close.add_argument("month", help="YYYY-MM")
    close.add_argument("--config")
    close.add_argument("--allow-missing-days", action="store_true", help="close although days of the month are not in the lake")
    close.set_defaults(func=cmd_close_month)

    rules = sub.add_parser("rules", help="work with allocation and tagging rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    diff = rules_sub.add_parser("diff", help="per team and pool: amounts under current vs proposed rules (writes nothing)")
    diff.add_argument("--config")
    diff.add_argument("--proposed", required=True, help="a config file holding the proposed rules")
    diff.add_argument("--start", type=_date, required=True)
    diff.add_argument("--end", type=_date, required=True, help="last day, inclusive")
    diff.add_argument("--all", action="store_true", help="also list rows that do not change")
    diff.set_defaults(func=cmd_rules_diff)
    apply = rules_sub.add_parser("apply", help="preview a rule change, then (with --yes) adopt it and backfill the range")
    apply.add_argument("--config", help="the config file the proposed rules replace")
    apply.add_argument("--proposed", required=True, help="a config file holding the proposed rules")
    apply.add_argument("--start", type=_date, required=True)
    apply.add_argument("--end", type=_date, required=True, help="last day, inclusive")
    apply.add_argument("--yes", action="store_true", help="adopt and backfill; without it, only the preview is printed")
    apply.add_argument("--log-level", default="CRITICAL", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
    apply.set_defaults(func=cmd_rules_apply)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
