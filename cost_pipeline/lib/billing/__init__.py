"""Billing exports as delivered by each provider, turned into normalized cost lines."""
