"""
Tests for L{smtpd.delivery.client} and L{smtpd.delivery.wire}: dot-stuffing, and L{RelayClient} sessions against a
recording SMTP sink over real loopback sockets.
"""

from __future__ import annotations

import io

from twisted.internet import reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from smtpd.mail import address
from smtpd.delivery.client import MAX_REPLY_LINE, MAX_REPLY_LINES, RelayClient
from smtpd.delivery.wire import (
    DotStuffer,
    OutboundMessage,
    SessionError,
    dot_stuff,
    enhanced_status,
    xtext,
)
from smtpd.mail.envelope import Recipient
from smtpd.mail.source import CHUNK_SIZE, BytesSource, FileSource
from tests.support import (
    CertificateAuthority,
    SinkScript,
    broken_tls_options,
    start_smtp_sink,
)

MESSAGE = (
    b"From: a@ours.test\r\nTo: b@example.test\r\nSubject: dots\r\n\r\n"
    b".\r\n..two\r\n.leading\r\nmiddle . dot\r\n.\r\nlast line\r\n"
)


class DotStufferTests(unittest.TestCase):
    """L{DotStuffer} and L{dot_stuff}."""

    def test_stuffing(self) -> None:
        """Lines starting with "." get another one; the stream ends in CRLF.CRLF."""
        self.assertEqual(
            dot_stuff(b".\r\n..x\r\na.b\r\n.end"),
            b"..\r\n...x\r\na.b\r\n..end\r\n.\r\n",
        )

    def test_every_split(self) -> None:
        """Cutting the data into two chunks anywhere gives the same stream."""
        data = b".a\r\n.\r\nb\r\r\n\r\n.c\n.d\r.e\r\n"
        whole = dot_stuff(data)
        for cut in range(len(data) + 1):
            stuffer = DotStuffer()
            stream = stuffer.feed(data[:cut]) + stuffer.feed(data[cut:]) + stuffer.finish()
            self.assertEqual(stream, whole, f"cut at {cut}")

    def test_bare_line_ends(self) -> None:
        """A bare LF or bare CR becomes CRLF, so no bare newline goes out."""
        self.assertEqual(dot_stuff(b"a\nb\rc\r\n"), b"a\r\nb\r\nc\r\n.\r\n")

    def test_ends(self) -> None:
        """An empty message is just the dot line; a final CRLF is not doubled."""
        self.assertEqual(dot_stuff(b""), b".\r\n")
        self.assertEqual(dot_stuff(b"a\r\n"), b"a\r\n.\r\n")
        self.assertEqual(dot_stuff(b"a\r"), b"a\r\n.\r\n")

    def test_xtext(self) -> None:
        """xtext escapes +, =, spaces and non-ASCII."""
        self.assertEqual(xtext("a+b=c d\u00e9"), "a+2Bb+3Dc+20d+C3+A9")

    def test_enhanced_status(self) -> None:
        """The enhanced status is taken from a reply when its class agrees."""
        self.assertEqual(enhanced_status(550, "550 5.1.1 no such user"), "5.1.1")
        self.assertEqual(enhanced_status(550, "550 no such user"), "5.0.0")
        self.assertEqual(enhanced_status(450, "450 5.1.1 mismatched"), "4.0.0")


class ClientTests(unittest.TestCase):
    """L{RelayClient} against a real sink on 127.0.0.2."""

    def sink(self, **script) -> object:
        return start_smtp_sink(self, "127.0.0.2", script=SinkScript(**script))

    async def connect(self, sink, ready: bool = True, **kw) -> RelayClient:
        kw.setdefault("clock", reactor)
        kw.setdefault("timeout", 30)
        client = RelayClient("relay.ours.test", f"sink.test [{sink.host}]", **kw)
        await connectProtocol(TCP4ClientEndpoint(reactor, sink.host, sink.port), client)
        self.addCleanup(client.quit)
        if ready:
            await client.ready
        return client

    async def refused(self, sink, **kw) -> SessionError:
        client = await self.connect(sink, ready=False, **kw)
        try:
            await client.ready
        except SessionError as e:
            return e
        self.fail("session did not fail")

    def message(self, *addresses, data=MESSAGE, **kw) -> OutboundMessage:
        addresses = addresses or ("b@example.test",)
        recipients = tuple(a if isinstance(a, Recipient) else Recipient(a) for a in addresses)
        return OutboundMessage("a@ours.test", recipients, BytesSource(data), **kw)

    async def test_exact_transaction(self) -> None:
        """The sink gets the exact envelope, the dot-stuffed stream and the message."""
        sink = self.sink()
        client = await self.connect(sink)
        statuses = await client.send(self.message("b@example.test", "c@example.test"))
        [got] = sink.messages
        self.assertEqual(got.helo, "relay.ours.test")
        self.assertEqual(got.mail, "MAIL FROM:<a@ours.test>")
        self.assertEqual(got.rcpt, ["RCPT TO:<b@example.test>", "RCPT TO:<c@example.test>"])
        self.assertEqual(got.data, MESSAGE)
        self.assertIn(b"\r\n..\r\n...two\r\n..leading\r\nmiddle . dot\r\n", got.raw)
        self.assertTrue(got.raw.endswith(b"last line\r\n.\r\n"))
        self.assertEqual(
            [(s.address, s.code, s.status, s.reply, s.remote_mta) for s in statuses],
            [
                (r, 250, "2.0.0", "250 2.0.0 Ok: queued", "sink.test [127.0.0.2]")
                for r in ("b@example.test", "c@example.test")
            ],
        )

    async def test_no_nagle_delay(self) -> None:
        """
        The session's socket has TCP_NODELAY: a pipelined flight or the final
        dot is not held back by Nagle's algorithm waiting for the host's
        delayed ACK (~40 ms a message on one connection).
        """
        sink = self.sink()
        client = await self.connect(sink)
        self.assertTrue(client.transport.getTcpNoDelay())

    async def test_dot_at_chunk_boundary(self) -> None:
        """A "." line that starts exactly where a chunk starts is still stuffed."""
        sink = self.sink()
        client = await self.connect(sink)
        first = b"x" * (CHUNK_SIZE - 2) + b"\r\n.hidden\r\n"
        second = b"y" * (CHUNK_SIZE - 1) + b"\r\n.cut\r\n.\r\n"
        for data in (first, second):
            [status] = await client.send(self.message(data=data))
            self.assertEqual(status.code, 250)
        self.assertTrue([m.data for m in sink.messages] == [first, second])
        self.assertIn(b"\r\n..hidden\r\n", sink.messages[0].raw)
        self.assertIn(b"\r\n..cut\r\n..\r\n.\r\n", sink.messages[1].raw)

    async def test_data_without_final_newline(self) -> None:
        """Data that does not end in CRLF gets one before the final dot."""
        sink = self.sink()
        client = await self.connect(sink)
        await client.send(self.message(data=b"Subject: x\r\n\r\nno newline"))
        self.assertTrue(sink.messages[0].raw.endswith(b"no newline\r\n.\r\n"))

    async def test_per_recipient_replies(self) -> None:
        """Each recipient gets its own RCPT answer; only accepted ones are sent to."""
        sink = self.sink(rcpt={"bad@example.test": "550 5.1.1 no such user",
                               "later@example.test": "451 4.2.0 try later"})
        client = await self.connect(sink)
        statuses = await client.send(
            self.message("bad@example.test", "good@example.test", "later@example.test")
        )
        self.assertEqual(
            [(s.code, s.status, s.reply) for s in statuses],
            [
                (550, "5.1.1", "550 5.1.1 no such user"),
                (250, "2.0.0", "250 2.0.0 Ok: queued"),
                (451, "4.2.0", "451 4.2.0 try later"),
            ],
        )
        self.assertEqual(sink.messages[0].recipients, ["good@example.test"])

    async def test_no_recipient_accepted(self) -> None:
        """
        Toward a host without PIPELINING, with every RCPT refused no DATA is
        sent; the next transaction starts with RSET.
        """
        sink = self.sink(rcpt={"bad@example.test": "550 5.1.1 no such user"},
                         extensions=("8BITMIME",))
        client = await self.connect(sink)
        [status] = await client.send(self.message("bad@example.test"))
        self.assertEqual(status.code, 550)
        self.assertNotIn("DATA", sink.commands)
        [status] = await client.send(self.message("good@example.test"))
        self.assertEqual(status.code, 250)
        self.assertEqual(sink.commands[-4:-2], ["RSET", "MAIL FROM:<a@ours.test>"])

    async def test_final_reply_applies_to_accepted(self) -> None:
        """The reply after the data applies to every accepted recipient."""
        sink = self.sink(rcpt={"bad@example.test": "550 5.1.1 no such user"},
                         end_of_data="554 5.6.0 content rejected")
        client = await self.connect(sink)
        statuses = await client.send(
            self.message("a1@example.test", "bad@example.test", "a2@example.test")
        )
        self.assertEqual([(s.code, s.status) for s in statuses],
                         [(554, "5.6.0"), (550, "5.1.1"), (554, "5.6.0")])

    async def test_data_refused(self) -> None:
        """A refused DATA command applies to every accepted recipient."""
        sink = self.sink(data="451 4.3.0 no space")
        client = await self.connect(sink)
        [status] = await client.send(self.message())
        self.assertEqual((status.code, status.status), (451, "4.3.0"))
        self.assertEqual(sink.messages, [])

    async def test_421_mid_transaction(self) -> None:
        """
        A 421 during RCPT ends the session: recipients without a final answer
        get it (temporary), a recipient already refused keeps its 550; one
        command at a time, no RCPT follows the 421.
        """
        sink = self.sink(rcpt={"bad@example.test": "550 5.1.1 no such user",
                               "stop@example.test": "421 4.3.2 shutting down"},
                         extensions=("8BITMIME",))
        client = await self.connect(sink)
        statuses = await client.send(
            self.message("ok@example.test", "bad@example.test", "stop@example.test",
                         "never@example.test")
        )
        self.assertEqual([s.code for s in statuses], [421, 550, 421, 421])
        self.assertFalse(client.usable)
        self.assertNotIn("RCPT TO:<never@example.test>", sink.commands)

    async def test_pipelined_flight(self) -> None:
        """
        Toward a host that offers PIPELINING, MAIL, every RCPT and DATA go in
        one write; the replies are matched in order, one status each.
        """
        sink = self.sink(rcpt={"bad@example.test": "550 5.1.1 no such user"})
        client = await self.connect(sink)
        statuses = await client.send(
            self.message("a1@example.test", "bad@example.test", "a2@example.test"))
        self.assertIn(["MAIL FROM:<a@ours.test>", "RCPT TO:<a1@example.test>",
                       "RCPT TO:<bad@example.test>", "RCPT TO:<a2@example.test>", "DATA"],
                      sink.batches)
        self.assertEqual([(s.code, s.status) for s in statuses],
                         [(250, "2.0.0"), (550, "5.1.1"), (250, "2.0.0")])
        self.assertEqual(sink.messages[0].recipients, ["a1@example.test", "a2@example.test"])
        self.assertEqual(sink.messages[0].data, MESSAGE)

    async def test_one_command_at_a_time(self) -> None:
        """Toward a host without PIPELINING each command waits for the reply to the last."""
        sink = self.sink(extensions=("8BITMIME",))
        client = await self.connect(sink)
        [status] = await client.send(self.message())
        self.assertEqual(status.code, 250)
        self.assertEqual({len(batch) for batch in sink.batches}, {1})
        self.assertIn(["DATA"], sink.batches)

    async def test_pipelined_no_recipient_accepted(self) -> None:
        """
        Pipelined, with every RCPT refused the host refuses the DATA sent
        with them: nothing is delivered, each keeps its RCPT reply, and the
        session stays usable.
        """
        sink = self.sink(rcpt={"bad@example.test": "550 5.1.1 no such user"})
        client = await self.connect(sink)
        [status] = await client.send(self.message("bad@example.test"))
        self.assertEqual((status.code, sink.messages), (550, []))
        self.assertTrue(client.usable)
        [status] = await client.send(self.message("good@example.test"))
        self.assertEqual(status.code, 250)

    async def test_pipelined_421(self) -> None:
        """Pipelined, a 421 to one RCPT is the status of it and of every later recipient."""
        sink = self.sink(rcpt={"bad@example.test": "550 5.1.1 no such user",
                               "stop@example.test": "421 4.3.2 shutting down"})
        client = await self.connect(sink)
        statuses = await client.send(
            self.message("ok@example.test", "bad@example.test", "stop@example.test",
                         "never@example.test"))
        self.assertEqual([s.code for s in statuses], [421, 550, 421, 421])
        self.assertFalse(client.usable)

    async def test_pipelined_mail_421(self) -> None:
        """Pipelined, a 421 to MAIL fails the transaction and ends the session."""
        sink = self.sink(mail="421 4.3.2 shutting down")
        client = await self.connect(sink)
        with self.assertRaises(SessionError) as caught:
            await client.send(self.message("a1@example.test", "a2@example.test"))
        self.assertEqual((caught.exception.code, caught.exception.status), (421, "4.3.2"))
        self.assertFalse(client.usable)

    async def test_pipelined_mail_refused(self) -> None:
        """Pipelined, a refused MAIL fails the transaction; the rest of the flight is read."""
        sink = self.sink(mail="451 4.3.0 try again")
        client = await self.connect(sink)
        with self.assertRaises(SessionError) as caught:
            await client.send(self.message())
        self.assertEqual(caught.exception.code, 451)
        self.assertTrue(client.usable)
        sink.script.mail = "250 2.1.0 Ok"
        [status] = await client.send(self.message())
        self.assertEqual(status.code, 250)

    async def test_mail_refused(self) -> None:
        """A refused MAIL fails the transaction as a whole; the session stays usable."""
        sink = self.sink(mail="451 4.3.0 try again")
        client = await self.connect(sink)
        try:
            await client.send(self.message())
        except SessionError as e:
            self.assertEqual((e.code, e.status, e.reply, e.stale),
                             (451, "4.3.0", "451 4.3.0 try again", False))
        else:
            self.fail("MAIL refusal not reported")
        self.assertTrue(client.usable)

    async def test_mail_refused_permanently(self) -> None:
        """
        A 5xx to MAIL is final: no other host of the route is to be tried; a
        4xx to MAIL is not.
        """
        sink = self.sink(mail="550 5.7.1 we do not like you")
        client = await self.connect(sink)
        with self.assertRaises(SessionError) as caught:
            await client.send(self.message())
        self.assertEqual((caught.exception.code, caught.exception.final), (550, True))
        sink.script.mail = "451 4.3.0 try again"
        with self.assertRaises(SessionError) as caught:
            await client.send(self.message())
        self.assertEqual((caught.exception.code, caught.exception.final), (451, False))

    async def test_greeting_refused(self) -> None:
        """A 4xx or 5xx greeting fails the session with that reply."""
        e = await self.refused(self.sink(greeting="421 4.3.2 busy"))
        self.assertEqual((e.code, e.status, e.permanent), (421, "4.3.2", False))
        e = await self.refused(start_smtp_sink(self, "127.0.0.3", script=SinkScript(
            greeting="554 5.7.1 go away")))
        self.assertEqual((e.code, e.status, e.permanent), (554, "5.7.1", True))

    async def test_helo_fallback(self) -> None:
        """A 5xx to EHLO falls back to HELO, and no ESMTP parameter is used."""
        sink = self.sink(ehlo="502 5.5.2 what?", dsn=True, size=1000000)
        client = await self.connect(sink)
        await client.send(self.message(Recipient("b@example.test", notify=("NEVER",)),
                                       ret="HDRS"))
        self.assertIn("HELO relay.ours.test", sink.commands)
        self.assertEqual(sink.messages[0].mail, "MAIL FROM:<a@ours.test>")
        self.assertEqual(sink.messages[0].rcpt, ["RCPT TO:<b@example.test>"])

    async def test_ehlo_temporary(self) -> None:
        """A 4xx to EHLO fails the session (no HELO)."""
        e = await self.refused(self.sink(ehlo="451 4.3.0 later"))
        self.assertEqual(e.code, 451)

    async def test_size(self) -> None:
        """SIZE= is declared when offered; a message over the host's limit is 552 5.3.4."""
        sink = self.sink(size=100000)
        client = await self.connect(sink)
        await client.send(self.message())
        self.assertEqual(sink.messages[0].mail, f"MAIL FROM:<a@ours.test> SIZE={len(MESSAGE)}")
        sink.script.size = 10
        small = await self.connect(sink)
        try:
            await small.send(self.message())
        except SessionError as e:
            self.assertEqual((e.code, e.status), (552, "5.3.4"))
        else:
            self.fail("size limit ignored")
        self.assertEqual(len(sink.messages), 1)

    async def test_8bitmime(self) -> None:
        """BODY=8BITMIME goes with 8-bit data only when the host offers 8BITMIME."""
        sink = self.sink()
        client = await self.connect(sink)
        await client.send(self.message(data=b"\xc3\xa9\r\n", eight_bit=True))
        await client.send(self.message())
        sink.script.extensions = ()
        plain = await self.connect(sink)
        await plain.send(self.message(data=b"\xc3\xa9\r\n", eight_bit=True))
        self.assertEqual(
            [m.mail for m in sink.messages],
            ["MAIL FROM:<a@ours.test> BODY=8BITMIME", "MAIL FROM:<a@ours.test>",
             "MAIL FROM:<a@ours.test>"],
        )
        self.assertEqual(sink.messages[2].data, b"\xc3\xa9\r\n")

    async def test_orcpt_xtext(self) -> None:
        """
        ORCPT is xtext on the wire (RFC 3461 4.2): an original recipient
        with "+" or a space is encoded, never sent raw nor dropped, and our
        own parser reads back what was accepted.
        """
        given = ["rfc822;u+2Btag@example.test", 'rfc822;"john+20smith"@example.test']
        recipients = []
        for i, text in enumerate(given):
            params = address.rcpt_params("NOTIFY=FAILURE ORCPT=" + text)
            recipients.append(Recipient(f"r{i}@example.test", params.notify, params.orcpt))
        self.assertEqual(recipients[1].orcpt, 'rfc822;"john smith"@example.test')
        sink = self.sink(dsn=True)
        await (await self.connect(sink)).send(self.message(*recipients))
        sent = [line.split("ORCPT=", 1)[1] for line in sink.messages[0].rcpt]
        self.assertEqual(sent, given)
        self.assertEqual(
            [address.rcpt_params("ORCPT=" + value).orcpt for value in sent],
            [r.orcpt for r in recipients],
        )

    async def test_dsn_parameters(self) -> None:
        """RET, ENVID, NOTIFY and ORCPT are passed only to a host that offers DSN."""
        recipient = Recipient("b@example.test", notify=("SUCCESS", "FAILURE"),
                              orcpt="rfc822;b@example.test")
        message = self.message(recipient, ret="HDRS", envid="id+1")
        sink = self.sink(dsn=True)
        await (await self.connect(sink)).send(message)
        sink.script.dsn = False
        await (await self.connect(sink)).send(message)
        with_dsn, without = sink.messages
        self.assertEqual(with_dsn.mail, "MAIL FROM:<a@ours.test> RET=HDRS ENVID=id+2B1")
        self.assertEqual(with_dsn.rcpt, [
            "RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.test"])
        self.assertEqual(without.mail, "MAIL FROM:<a@ours.test>")
        self.assertEqual(without.rcpt, ["RCPT TO:<b@example.test>"])

    async def test_unsafe_address(self) -> None:
        """An address with a control character is never put on the wire."""
        sink = self.sink()
        client = await self.connect(sink)
        statuses = await client.send(self.message("x@example.test\r\nDATA", "b@example.test"))
        self.assertEqual([s.code for s in statuses], [553, 250])
        self.assertEqual(sink.messages[0].rcpt, ["RCPT TO:<b@example.test>"])

    async def test_reuse_with_rset(self) -> None:
        """Several transactions run on one connection, separated by RSET."""
        sink = self.sink()
        client = await self.connect(sink)
        for _ in range(3):
            [status] = await client.send(self.message())
            self.assertEqual(status.code, 250)
        self.assertEqual((sink.connections, len(sink.messages)), (1, 3))
        self.assertEqual(sink.commands.count("RSET"), 2)
        self.assertEqual(client.transactions, 3)

    async def test_pipelined_reuse_one_write(self) -> None:
        """
        On a reused connection to a host with PIPELINING, RSET leads the
        flight: RSET, MAIL, RCPT and DATA in one write per transaction.
        """
        sink = self.sink()
        client = await self.connect(sink)
        for _ in range(2):
            [status] = await client.send(self.message())
            self.assertEqual(status.code, 250)
        self.assertIn(["RSET", "MAIL FROM:<a@ours.test>", "RCPT TO:<b@example.test>", "DATA"],
                      sink.batches)
        self.assertEqual(len(sink.messages), 2)

    async def test_pipelined_rset_refused(self) -> None:
        """
        A reused connection whose pipelined RSET is refused fails as stale
        (to be retried on a fresh one); no message is sent on it.
        """
        sink = self.sink(rset="500 5.5.1 no RSET here")
        client = await self.connect(sink)
        await client.send(self.message())
        with self.assertRaises(SessionError) as caught:
            await client.send(self.message())
        self.assertTrue(caught.exception.stale)
        self.assertEqual(len(sink.messages), 1)

    async def test_stale_connection(self) -> None:
        """A reused connection the host closed fails as stale, to be retried."""
        sink = self.sink()
        client = await self.connect(sink)
        await client.send(self.message())
        closed = client.whenClosed()
        await sink.close_all()
        await closed
        self.assertFalse(client.usable)
        try:
            await client.send(self.message())
        except SessionError as e:
            self.assertTrue(e.stale)
            self.assertEqual(e.status, "4.4.2")
        else:
            self.fail("dead connection used")

    async def test_timeout(self) -> None:
        """No greeting within the timeout fails the session with 4.4.2."""
        clock = Clock()
        sink = self.sink(greeting=None)
        client = await self.connect(sink, ready=False, clock=clock, timeout=60)
        clock.advance(59)
        self.assertFalse(client.ready.called)
        clock.advance(1)
        try:
            await client.ready
        except SessionError as e:
            self.assertEqual((e.code, e.status), (451, "4.4.2"))
            self.assertIn("timeout while waiting for initial greeting", e.reply)
        else:
            self.fail("no timeout")

    async def test_endless_multiline_reply(self) -> None:
        """
        A host that sends thousands of "220-" continuation lines fails the
        session with 451 4.5.0 naming the host once one reply passes the
        limit; the lines are not all kept.
        """
        line = "220-" + "x" * 1000 + "\r\n"
        sink = self.sink(greeting=line * 5000 + "220 sink.test at last")
        e = await self.refused(sink, clock=Clock())
        self.assertEqual((e.code, e.status), (451, "4.5.0"))
        self.assertIn("sink.test [127.0.0.2]", e.reply)
        self.assertIn("reply from", e.reply)

    async def test_reply_line_too_long(self) -> None:
        """A reply line longer than MAX_REPLY_LINE is a protocol error (451 4.5.0)."""
        sink = self.sink(greeting="220 " + "x" * (MAX_REPLY_LINE + 10))
        e = await self.refused(sink, clock=Clock())
        self.assertEqual((e.code, e.status), (451, "4.5.0"))
        self.assertIn("reply line from sink.test [127.0.0.2]", e.reply)

    async def test_long_ehlo_reply(self) -> None:
        """An EHLO reply just under the line limit is read whole."""
        keywords = tuple(f"X-EXT{i}" for i in range(MAX_REPLY_LINES - 5))
        sink = self.sink(extensions=keywords, size=0)
        client = await self.connect(sink)
        self.assertIn("X-EXT0", client.extensions)
        self.assertIn("SIZE", client.extensions)
        [status] = await client.send(self.message())
        self.assertEqual(status.code, 250)

    async def test_tls_handshake_failure(self) -> None:
        """
        A host whose STARTTLS handshake fails: 451 4.7.5, marked as a TLS
        failure (a plain-text session may still work), nothing sent.
        """
        sink = self.sink(tls=broken_tls_options())
        e = await self.refused(sink, tls="may", tls_options=ssl.CertificateOptions())
        self.assertEqual((e.code, e.status, e.tls_failure), (451, "4.7.5", True))
        self.assertEqual(sink.commands, ["EHLO relay.ours.test", "STARTTLS"])

    async def test_starttls_refused(self) -> None:
        """A refused STARTTLS is a TLS failure too (4.7.5)."""
        sink = self.sink(extensions=("STARTTLS",))  # offered, then refused with 502
        e = await self.refused(sink, tls="may", tls_options=ssl.CertificateOptions())
        self.assertEqual((e.status, e.tls_failure), ("4.7.5", True))
        self.assertIn("502 5.5.1", e.reply)

    async def test_tls_may(self) -> None:
        """Policy C{may} starts TLS when offered, unverified, and EHLOs again."""
        ca = CertificateAuthority()
        sink = self.sink(tls=ca.server_options("other.name.test"))
        client = await self.connect(sink, tls="may", tls_options=ssl.CertificateOptions())
        self.assertTrue(client.secure)
        statuses = await client.send(self.message())
        self.assertTrue(sink.messages[0].tls)
        self.assertTrue(all(s.tls for s in statuses), statuses)
        self.assertEqual(sink.commands[:3], ["EHLO relay.ours.test", "STARTTLS",
                                             "EHLO relay.ours.test"])

    async def test_tls_streams_big_message(self) -> None:
        """A message of many chunks streams intact through TLS, dot-stuffed."""
        ca = CertificateAuthority()
        sink = self.sink(tls=ca.server_options("other.name.test"))
        client = await self.connect(sink, tls="may", tls_options=ssl.CertificateOptions())
        data = b"Subject: big\r\n\r\n" + b".line of the body\r\n" * 200_000
        [status] = await client.send(self.message(data=data))
        self.assertEqual(status.code, 250)
        self.assertEqual(sink.messages[0].data, data)
        self.assertTrue(sink.messages[0].tls)

    async def test_connection_lost_in_data(self) -> None:
        """
        A host that drops the connection while the message streams: every
        accepted recipient gets 451 4.4.2, the session is over, and the
        message file is closed.
        """
        sink = self.sink(drop_in_data=True)
        client = await self.connect(sink)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"Subject: big\r\n\r\n" + b"body line\r\n" * 500_000)
        opened = []

        class Source(FileSource):
            def open(self):
                opened.append(super().open())
                return opened[-1]

        message = OutboundMessage("a@ours.test", (Recipient("b@example.test"),), Source(path))
        [status] = await client.send(message)
        self.assertEqual((status.code, status.status), (451, "4.4.2"))
        self.assertIn("end of DATA", status.reply)
        self.assertFalse(client.usable)
        self.assertTrue(opened[0].closed)

    async def test_read_error_in_data(self) -> None:
        """
        A disk error while the message streams ends the session (the host
        must not take a truncated message): 451 4.3.0 for the recipients.
        """
        sink = self.sink()
        client = await self.connect(sink)

        class Failing(io.BytesIO):
            def read(self, size=-1):
                if self.tell():
                    raise OSError(5, "Input/output error")
                return super().read(size)

        class Source:
            size = 10 * CHUNK_SIZE

            def open(self):
                return Failing(b"x" * self.size)

        message = OutboundMessage("a@ours.test", (Recipient("b@example.test"),), Source())
        [status] = await client.send(message)
        self.assertEqual((status.code, status.status), (451, "4.3.0"))
        self.assertIn("cannot read the message", status.reply)
        self.assertEqual(sink.messages, [])

    async def test_tls_may_not_offered(self) -> None:
        """Policy C{may} goes on in plain text when STARTTLS is not offered."""
        sink = self.sink()
        client = await self.connect(sink, tls="may", tls_options=ssl.CertificateOptions())
        statuses = await client.send(self.message())
        self.assertFalse(sink.messages[0].tls)
        self.assertFalse(any(s.tls for s in statuses), statuses)

    async def test_tls_none(self) -> None:
        """Policy C{none} never starts TLS."""
        sink = self.sink(tls=CertificateAuthority().server_options("sink.test"))
        client = await self.connect(sink, tls="none", tls_options=ssl.CertificateOptions())
        await client.send(self.message())
        self.assertNotIn("STARTTLS", sink.commands)

    async def test_tls_encrypt_not_offered(self) -> None:
        """Policy C{encrypt} fails temporarily (4.7.5) when STARTTLS is not offered."""
        e = await self.refused(self.sink(), tls="encrypt",
                               tls_options=ssl.CertificateOptions())
        self.assertEqual((e.code, e.status), (451, "4.7.5"))
        self.assertIn("TLS is required", e.reply)

    async def test_tls_encrypt_helo_only(self) -> None:
        """Policy C{encrypt} does not fall back to HELO: 4.7.5."""
        e = await self.refused(self.sink(ehlo="502 5.5.1 no"), tls="encrypt",
                               tls_options=ssl.CertificateOptions())
        self.assertEqual(e.status, "4.7.5")

    async def test_tls_verify(self) -> None:
        """Policy C{verify} accepts a certificate for the host name from a trusted CA."""
        ca = CertificateAuthority()
        sink = self.sink(tls=ca.server_options("mx.example.test"))
        options = ssl.optionsForClientTLS("mx.example.test", trustRoot=ca.trust_root())
        client = await self.connect(sink, tls="verify", tls_options=options)
        await client.send(self.message())
        self.assertTrue(sink.messages[0].tls)

    async def test_tls_verify_mismatch(self) -> None:
        """Policy C{verify} refuses a certificate for another name: temporary 4.7.5."""
        ca = CertificateAuthority()
        sink = self.sink(tls=ca.server_options("other.example.test"))
        options = ssl.optionsForClientTLS("mx.example.test", trustRoot=ca.trust_root())
        e = await self.refused(sink, tls="verify", tls_options=options)
        self.assertEqual((e.code, e.status), (451, "4.7.5"))
        self.assertEqual(sink.messages, [])

    async def test_tls_verify_untrusted(self) -> None:
        """Policy C{verify} refuses a certificate from an unknown CA."""
        sink = self.sink(tls=CertificateAuthority().server_options("mx.example.test"))
        options = ssl.optionsForClientTLS(
            "mx.example.test", trustRoot=CertificateAuthority().trust_root()
        )
        e = await self.refused(sink, tls="verify", tls_options=options)
        self.assertEqual(e.status, "4.7.5")

    async def test_auth_plain(self) -> None:
        """AUTH PLAIN is used when a user is set and the host offers it."""
        sink = self.sink(auth={"relay": "s3cret"})
        client = await self.connect(sink, username="relay", password="s3cret")
        await client.send(self.message())
        self.assertEqual(sink.messages[0].auth, "relay")
        self.assertTrue(any(c.startswith("AUTH PLAIN ") for c in sink.commands))

    async def test_auth_login(self) -> None:
        """AUTH LOGIN is used when the host offers only LOGIN."""
        sink = self.sink(auth={"relay": "s3cret"}, auth_mechanisms=("LOGIN",))
        client = await self.connect(sink, username="relay", password="s3cret")
        await client.send(self.message())
        self.assertEqual(sink.messages[0].auth, "relay")
        self.assertIn("AUTH LOGIN", sink.commands)

    async def test_auth_rejected(self) -> None:
        """Rejected credentials are a temporary failure (4.7.0), not a bounce."""
        sink = self.sink(auth={"relay": "s3cret"})
        e = await self.refused(sink, username="relay", password="wrong")
        self.assertEqual((e.code, e.status), (451, "4.7.0"))
        self.assertIn("535 5.7.8", e.reply)
        self.assertEqual(len([c for c in sink.commands if c.startswith("AUTH")]), 1)

    async def test_auth_not_offered(self) -> None:
        """A user set and no AUTH offered: temporary 4.7.0, no mail sent."""
        sink = self.sink()
        e = await self.refused(sink, username="relay", password="s3cret")
        self.assertEqual(e.status, "4.7.0")
        self.assertFalse(any(c.startswith("MAIL") for c in sink.commands))


class ReplyTimeoutTests(unittest.TestCase):
    """L{RelayClient}'s timeout over a L{StringTransport}, with a L{Clock}."""

    def test_continuation_lines_do_not_extend(self) -> None:
        """
        A reply that never ends still times out: continuation lines do not
        restart the timeout, only a complete reply does.
        """
        clock = Clock()
        client = RelayClient("relay.ours.test", "slow.test [127.0.0.2]", clock, 60)
        client.makeConnection(StringTransport())
        failures: list = []
        client.ready.addErrback(failures.append)
        client.dataReceived(b"220-slow.test still talking\r\n")
        clock.advance(30)
        client.dataReceived(b"220-slow.test still talking\r\n")
        clock.advance(29)
        self.assertEqual(failures, [])
        clock.advance(1)
        [failure] = failures
        failure.trap(SessionError)
        error = failure.value
        self.assertEqual((error.code, error.status), (451, "4.4.2"))
        self.assertIn("initial greeting", error.reply)

    def test_complete_reply_restarts(self) -> None:
        """After a complete reply the next one gets the whole timeout again."""
        clock = Clock()
        transport = StringTransport()
        client = RelayClient("relay.ours.test", "slow.test [127.0.0.2]", clock, 60)
        client.makeConnection(transport)
        clock.advance(59)
        client.dataReceived(b"220 slow.test ready\r\n")
        self.assertEqual(transport.value(), b"EHLO relay.ours.test\r\n")
        clock.advance(59)
        client.dataReceived(b"250 slow.test\r\n")
        self.assertIs(self.successResultOf(client.ready), client)
