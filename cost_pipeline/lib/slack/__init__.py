"""Slack digests and alerts: Block Kit messages (``messages``), a ledger and two senders (``delivery``)."""
