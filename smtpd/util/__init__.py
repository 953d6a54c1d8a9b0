"""Helpers every part shares: durable writes, TLS certificates, the activity log."""
