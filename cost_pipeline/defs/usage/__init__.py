"""Dagster definitions for the usage area."""
