"""
Mail authentication: DKIM signing of outgoing mail, and the inbound SPF, DKIM
and DMARC checks that produce one C{Authentication-Results:} header.

Layer: imports only L{smtpd.config}, L{smtpd.util}, L{smtpd.mail} and
third-party libraries; the cleanup stage and the relay call it.
"""
