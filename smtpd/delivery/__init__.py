"""Delivery agents: Maildir, drop folder, relay by MX or smart host."""
