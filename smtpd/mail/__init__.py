"""What a message is: envelopes, addresses, line endings."""
