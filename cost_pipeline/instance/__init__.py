"""Dagster instance plug-ins configured by ``deployments/*/dagster.yaml``."""
