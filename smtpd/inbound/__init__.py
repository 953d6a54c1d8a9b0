"""Mail arriving over SMTP: listeners, sessions, access policy."""
