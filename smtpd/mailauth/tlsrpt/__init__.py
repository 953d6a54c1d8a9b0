"""
SMTP TLS Reporting (RFC 8460): what the relay's TLS sessions came to, per
policy domain, and the daily report mailed (or posted) to the address each
domain publishes in C{_smtp._tls}.

    outcome   L{TLSOutcome}, L{TLSPolicy}: one connection's TLS result; the
              result types of RFC 8460 4.3; L{ITLSOutcomes}, what records them
    store     L{OutcomeStore}: the counts of each UTC day, on disk under
              C{mailroot/tlsrpt/}
    report    the JSON report of one domain for one day, gzip, file name
    record    the C{_smtp._tls} TXT record (C{v=TLSRPTv1; rua=...})
    message   the report as a C{multipart/report; report-type=tlsrpt} message
    reporter  L{TLSReporter}: once a day, every domain's report, sent
    post      L{ReportPoster}: a report POSTed to an https rua, retried
"""
