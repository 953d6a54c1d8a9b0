"""Administration: smtpctl."""
