"""smtpd: a production SMTP mail server on Twisted."""
