# -*- test-case-name: tests.test_protocol -*-
"""
The session commands outside a mail transaction (RFC 5321 4.1.1, RFC 1869,
RFC 3207): EHLO, HELO, NOOP, RSET, QUIT, VRFY, EXPN, HELP, STARTTLS.
"""

from __future__ import annotations

from twisted.internet.interfaces import ITLSTransport


class Commands:
    """The greeting and session commands of L{smtpd.inbound.session.SMTPSession}."""

    _helo: str | None = None
    _esmtp = False

    def smtp_HELO(self, arg: str):
        """RFC 5321 4.1.1.1."""
        return self._greet(arg, esmtp=False)

    def smtp_EHLO(self, arg: str):
        """RFC 5321 4.1.1.1 and RFC 1869: the greeting with our extensions."""
        return self._greet(arg, esmtp=True)

    def _greet(self, arg: str, esmtp: bool):
        verb = "EHLO" if esmtp else "HELO"
        if not arg or " " in arg or not arg.isascii():
            return self._reply(501, "5.5.4", f"Syntax: {verb} hostname")
        self._helo, self._esmtp = arg, esmtp
        self._reset()
        name = self._hostname
        if not esmtp:
            self._send(f"250 {name}\r\n")
            return self._log(250)
        lines = [name, *self._extensions()]
        text = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
        self._send(text)
        self._log(250)

    def _extensions(self) -> list[str]:
        config = self.inbound.config
        ext = [
            "PIPELINING",
            f"SIZE {config.messages.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "DSN",
            "SMTPUTF8",
        ]
        if self._can_starttls():
            ext.append("STARTTLS")
        if self._tls:
            ext.append("REQUIRETLS")  # RFC 8689 2: only offered under TLS
        if self._auth_offered():
            ext.append("AUTH " + " ".join(config.auth.mechanisms))
        return ext

    def _can_starttls(self) -> bool:
        return (
            not self._tls
            and self.inbound.tls_options is not None
            and ITLSTransport.providedBy(self.transport)
        )

    def smtp_NOOP(self, arg: str):
        """RFC 5321 4.1.1.9: arguments are allowed and ignored."""
        return self._reply(250, "2.0.0", "Ok")

    def smtp_RSET(self, arg: str):
        """RFC 5321 4.1.1.5: abort the transaction."""
        if arg:
            return self._reply(501, "5.5.4", "Syntax: RSET")
        self._reset()
        return self._reply(250, "2.0.0", "Ok")

    def smtp_QUIT(self, arg: str):
        """RFC 5321 4.1.1.10."""
        self._reply(221, "2.0.0", "Bye")
        self._close()

    def smtp_VRFY(self, arg: str):
        """RFC 5321 3.5.3: no address harvesting, but no refusal either."""
        if not arg:
            return self._reply(501, "5.5.4", "Syntax: VRFY address")
        return self._reply(
            252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"
        )

    def smtp_EXPN(self, arg: str):
        """RFC 5321 3.5.3: mailing lists are not disclosed."""
        return self._reply(502, "5.5.1", "Error: command not implemented")

    def smtp_HELP(self, arg: str):
        """RFC 5321 4.1.1.8."""
        return self._reply(
            214,
            "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
        )

    def smtp_STARTTLS(self, arg: str):
        """
        RFC 3207. Whatever the client pipelined behind STARTTLS is discarded
        before the handshake (command injection), and the session starts anew.
        """
        if arg:
            return self._reply(501, "5.5.4", "Syntax: STARTTLS")
        if self._tls:
            return self._reply(503, "5.5.1", "Error: TLS already active")
        if not self._can_starttls():
            return self._reply(454, "4.7.0", "TLS not available")
        self._reply(220, "2.0.0", "Ready to start TLS")
        self._buf = b""
        self.transport.startTLS(self.inbound.tls_options)
        self._tls = True
        # RFC 3207 4.2: forget everything learnt before TLS.
        self._helo, self._esmtp, self._user = None, False, None
        self._reset()

    @property
    def helo(self) -> str | None:
        """The HELO/EHLO name the client gave."""
        return self._helo
