"""Dagster definitions for the billing area."""
