"""
POP3 (RFC 1939) for the Maildirs smtpd delivers into: recipients pick their
mail up with any POP3 client, over STLS (RFC 2595) or implicit TLS.

    server   -- accounts, one session per mailbox, login delay, the factories
    session  -- the protocol (L{twisted.mail.pop3.POP3} subclass)
    login    -- its AUTHORIZATION state: USER/PASS, AUTH PLAIN, STLS, CAPA
    maildir  -- one mailbox seen by one session (the Maildir rules)
"""
