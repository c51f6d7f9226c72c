"""Dagster definitions for the reports area."""
