"""Anomalies, budgets and Slack."""
