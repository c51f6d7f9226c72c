"""Domain logic: plain functions over Polars frames, testable without Dagster."""
