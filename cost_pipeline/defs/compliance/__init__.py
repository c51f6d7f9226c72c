"""Dagster definitions for the compliance area."""
