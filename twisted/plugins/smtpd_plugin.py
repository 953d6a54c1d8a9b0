"""The twistd dropin: C{twistd smtpd --config etc/smtpd.ini}."""

from twisted.application.service import ServiceMaker

smtpd = ServiceMaker(
    "smtpd", "smtpd.tap", "An SMTP mail server in the manner of IIS 6.0 SMTP", "smtpd"
)
