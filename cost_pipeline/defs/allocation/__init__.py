"""Dagster definitions for the allocation area."""
