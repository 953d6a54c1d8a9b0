"""
The pickup folder (IIS pickup, Postfix's pickup(8)): RFC 5322 files dropped
into C{mailroot/pickup/} are queued through cleanup like SMTP mail, then
removed; files that cannot be sent go to C{mailroot/badmail/}.
"""
