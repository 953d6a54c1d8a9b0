"""
Interop with a real Debian Postfix 3.7 (tests/postfix.py), both directions:
Postfix relays into smtpd, and smtpd relays into Postfix (BDAT, PIPELINING),
which delivers to its own virtual Maildirs; the bytes are compared end to end.
Between smtpd and Postfix a recording TCP proxy keeps what each side sent, in
the order it arrived, to show which commands smtpd sent before any reply.
"""

from __future__ import annotations

import re

from twisted.internet import reactor
from twisted.protocols import portforward
from twisted.trial import unittest

from tests.interop import USER, SmtpdDeployment, dsn_fields, eventually, sleep
from tests.postfix import POSTFIX_MISSING, postfix_instance, start_postfix

BODY = (b"From: <bob@smtpd.test>\r\nTo: <carol@postfix.test>\r\nSubject: interop\r\n"
        b"Message-ID: <interop-1@smtpd.test>\r\nDate: Tue, 01 Dec 2026 12:00:00 +0000\r\n\r\n"
        b".a line with a leading dot\r\n..two dots\r\n.\r\n" + b"z" * 998 + b"\r\nend\r\n")
MAIL = b"MAIL FROM:<bob@smtpd.test>"
RCPTS = [b"RCPT TO:<carol@postfix.test>", b"RCPT TO:<dave@postfix.test>"]


def lf(data: bytes) -> bytes:
    """C{data} with LF line ends, as Postfix's virtual(8) stores a message."""
    return data.replace(b"\r\n", b"\n")


class TapServer(portforward.ProxyServer):
    """The proxy's side facing smtpd: records what smtpd sends."""

    def dataReceived(self, data: bytes) -> None:
        self.factory.transcript.append(("client", data))
        super().dataReceived(data)


class TapClient(portforward.ProxyClient):
    """The proxy's side facing Postfix: records what Postfix sends."""

    def dataReceived(self, data: bytes) -> None:
        self.peer.factory.transcript.append(("server", data))
        super().dataReceived(data)


class TapClientFactory(portforward.ProxyClientFactory):
    """Connects L{TapClient}s."""

    protocol = TapClient


TapServer.clientProtocolFactory = TapClientFactory


class Tap(portforward.ProxyFactory):
    """
    A transparent TCP proxy to 127.0.0.1:C{port} keeping a transcript: the
    client's bytes, and the server's, in the order they reached the proxy.
    """

    protocol = TapServer

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port)
        self.transcript: list[tuple[str, bytes]] = []

    def flights(self) -> list[bytes]:
        """What the client sent between two pieces of server data, each joined."""
        found: list[bytes] = []
        previous = None
        for side, data in self.transcript:
            if side == "client":
                if previous == "client":
                    found[-1] += data
                else:
                    found.append(data)
            previous = side
        return found


def start_tap(case: unittest.TestCase, port: int) -> tuple[Tap, int]:
    """A listening L{Tap} in front of C{port}; the tap and its own port."""
    tap = Tap(port)
    listening = reactor.listenTCP(0, tap, interface="127.0.0.1")
    case.addCleanup(listening.stopListening)
    return tap, listening.getHost().port


class PostfixIntoSmtpdTests(unittest.TestCase):
    """Postfix (sendmail, then its SMTP client) relays into smtpd."""

    skip = POSTFIX_MISSING
    timeout = 90

    async def test_relayed_byte_exact(self) -> None:
        """
        A message submitted to Postfix with sendmail and relayed by Postfix's
        SMTP client (relayhost = smtpd) lands in smtpd's Maildir with header
        and body byte for byte, Postfix's and smtpd's Received: lines on top.
        smtpd offers CHUNKING, but Postfix 3.7's SMTP client never sends BDAT
        (only its server implements RFC 3030): smtpd's activity log shows
        the DATA transaction it used.
        """
        smtpd = SmtpdDeployment(self)
        postfix = start_postfix(self, relay=smtpd.port)
        message = BODY.replace(b"carol@postfix.test", b"bob@smtpd.test")
        postfix.sendmail(message, "alice@postfix.test", ["bob@smtpd.test"])
        await eventually(lambda: smtpd.maildir(), what="delivery into smtpd", log=postfix.log)
        [stored] = smtpd.maildir()
        self.assertTrue(stored.endswith(lf(message)), stored)
        head = stored[: -len(lf(message))]
        self.assertIn(b"by postfix.test (Postfix", head)
        self.assertIn(b"by mx.smtpd.test", head)
        await eventually(lambda: "status=sent" in postfix.log(), log=postfix.log)
        self.assertIn(f"relay=127.0.0.1[127.0.0.1]:{smtpd.port}", postfix.log())
        commands = [line["command"] for line in smtpd.activity() if line["event"] == "command"]
        # DATA twice: its 354, then the end of the data and its 250.
        self.assertEqual(commands[:5], ["EHLO", "MAIL", "RCPT", "DATA", "DATA"])
        self.assertNotIn("BDAT", commands)


class SmtpdIntoPostfixTests(unittest.TestCase):
    """smtpd relays into Postfix, which delivers to its virtual Maildirs."""

    skip = POSTFIX_MISSING
    timeout = 90

    def start(self, **settings: str) -> tuple:
        """Postfix with Maildirs for carol and dave, smtpd relaying to it through a tap."""
        postfix = start_postfix(self, mailboxes={"postfix.test": ["carol", "dave"]},
                                settings=settings)
        tap, port = start_tap(self, postfix.port)
        smtpd = SmtpdDeployment(self, f"[delivery]\nsmart_host = [127.0.0.1]:{port}\n")
        return postfix, smtpd, tap

    async def delivered(self, postfix, smtpd) -> None:
        """Wait until both recipients have the message and smtpd's queue is empty."""
        await eventually(lambda: postfix.messages("dave@postfix.test")
                         and postfix.messages("carol@postfix.test") and smtpd.queue_empty(),
                         what="delivery into Postfix", log=postfix.log)

    async def test_bdat_pipelined(self) -> None:
        """
        Toward Postfix (PIPELINING and CHUNKING offered) smtpd sends MAIL and
        both RCPTs in one flight before any reply, then the message as BDAT
        chunks, no DATA; Postfix counts the BDAT commands and stores the
        message byte-exact (dot lines untouched) in both Maildirs.
        """
        postfix, smtpd, tap = self.start()
        await smtpd.send(MAIL, RCPTS, BODY)
        await self.delivered(postfix, smtpd)
        for address in ("carol@postfix.test", "dave@postfix.test"):
            [stored] = postfix.messages(address)
            self.assertTrue(stored.endswith(lf(BODY)), stored)
            self.assertIn(b"by mx.smtpd.test", stored)
        flight = [f for f in tap.flights() if f.startswith(b"MAIL FROM:")]
        self.assertEqual(len(flight), 1, tap.flights())
        self.assertEqual(re.sub(rb" SIZE=\d+", b"", flight[0]),
                         b"\r\n".join([MAIL, *RCPTS]) + b"\r\n")
        sent = b"".join(data for side, data in tap.transcript if side == "client")
        self.assertIn(b"BDAT ", sent)
        self.assertNotIn(b"\r\nDATA\r\n", sent)
        self.assertNotIn("improper command pipelining", postfix.log())

    async def test_no_pipelining_offered(self) -> None:
        """
        Toward a Postfix that does not offer PIPELINING and drops clients that
        pipeline anyway (smtpd_forbid_unauth_pipelining), smtpd sends one
        command at a time: every flight is one command line, and the message
        arrives.
        """
        postfix, smtpd, tap = self.start(smtpd_discard_ehlo_keywords="pipelining",
                                         smtpd_forbid_unauth_pipelining="yes")
        await smtpd.send(MAIL, RCPTS, BODY)
        await self.delivered(postfix, smtpd)
        commands = [f for f in tap.flights() if not f.startswith(b"BDAT")]
        self.assertTrue(commands)
        for flight in commands:
            self.assertEqual(flight.count(b"\r\n"), 1, flight)
        self.assertNotIn("improper command pipelining", postfix.log())


class DsnRoundTripTests(unittest.TestCase):
    """
    NOTIFY=SUCCESS across both servers, each relaying to the other: the one
    that delivers reports "delivered"; the one that relayed to a DSN host
    sends nothing (RFC 3461 5.2.2).
    """

    skip = POSTFIX_MISSING
    timeout = 90

    def start(self) -> tuple:
        """Postfix (Maildirs alice, carol) and smtpd, each the other's relay."""
        postfix = postfix_instance(self, mailboxes={"postfix.test": ["alice", "carol"]})
        smtpd = SmtpdDeployment(self, f"[delivery]\nsmart_host = [127.0.0.1]:{postfix.port}\n")
        postfix.relay = f"127.0.0.1:{smtpd.port}"
        postfix.start()
        return postfix, smtpd

    async def test_smtpd_relays_postfix_reports(self) -> None:
        """
        smtpd relays carol@postfix.test with NOTIFY=SUCCESS, ORCPT, RET and
        ENVID to Postfix, which delivers and sends the "delivered" report
        back through smtpd to bob@smtpd.test, naming the original recipient
        and envelope id; smtpd sends no "relayed" report of its own.
        """
        postfix, smtpd = self.start()
        await smtpd.send(b"MAIL FROM:<bob@smtpd.test> RET=HDRS ENVID=round-1",
                         [b"RCPT TO:<carol@postfix.test> NOTIFY=SUCCESS "
                          b"ORCPT=rfc822;Carol@postfix.test"], BODY)
        await eventually(lambda: smtpd.maildir(USER) and smtpd.queue_empty(),
                         what="Postfix's report in bob's Maildir", log=postfix.log)
        self.assertEqual(len(postfix.messages("carol@postfix.test")), 1)
        await sleep(0.3)
        [report] = smtpd.maildir(USER)
        self.assertIn(b"From: Mail Delivery System <MAILER-DAEMON@postfix.test>", report)
        fields = dsn_fields(report)
        self.assertEqual(fields["Action"], "delivered")
        self.assertEqual(fields["Original-Recipient"], "rfc822;Carol@postfix.test")
        self.assertEqual(fields["Original-Envelope-Id"], "round-1")
        self.assertIn("sender delivery status notification", postfix.log())

    async def test_postfix_relays_smtpd_reports(self) -> None:
        """
        Postfix relays a message submitted with sendmail -N success to smtpd
        (which offers DSN) and sends no report itself; smtpd delivers to bob
        and its "delivered" report reaches alice's Maildir at Postfix.
        """
        postfix, smtpd = self.start()
        message = BODY.replace(b"carol@postfix.test", b"bob@smtpd.test")
        postfix.sendmail(message, "alice@postfix.test", ["bob@smtpd.test"],
                         "-N", "success", "-V", "round-2")
        await eventually(lambda: postfix.messages("alice@postfix.test") and smtpd.queue_empty(),
                         what="smtpd's report in alice's Maildir", log=postfix.log)
        self.assertEqual(len(smtpd.maildir(USER)), 1)
        [report] = postfix.messages("alice@postfix.test")
        fields = dsn_fields(report)
        self.assertEqual(fields["Action"], "delivered")
        self.assertEqual(fields["Final-Recipient"], "rfc822; bob@smtpd.test")
        self.assertEqual(fields["Original-Envelope-Id"], "round-2")
        self.assertNotIn("sender delivery status notification", postfix.log())
