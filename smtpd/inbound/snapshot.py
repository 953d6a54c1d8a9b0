# -*- test-case-name: tests.test_admin -*-
"""One inbound session as plain data, for the admin API (IIS Current Sessions)."""

from __future__ import annotations

from typing import Any


def tls_version(session: Any) -> str:
    """The TLS protocol version a session uses (C{"TLSv1.3"}), or "" without TLS."""
    if not session.tls_active or session.transport is None:
        return ""
    try:
        return session.transport.getHandle().get_protocol_version_name()
    except (AttributeError, OSError):
        return "TLS"


def session_info(session: Any) -> dict:
    """
    C{id}, C{peer}, C{reverse_name} (the admin API fills it in; "" here),
    C{helo}, C{user}, C{tls} (the protocol version, or ""), C{started} (Unix
    time), C{bytes_in}, C{bytes_out}, C{messages} (accepted), C{command} (the
    last one received).
    """
    return {
        "id": session.session_id,
        "peer": session.peer_ip,
        "reverse_name": "",
        "helo": getattr(session, "helo", None) or "",
        "user": getattr(session, "user", None) or "",
        "tls": tls_version(session),
        "started": session.started,
        "bytes_in": session.bytes_in,
        "bytes_out": session.bytes_out,
        "messages": session.messages,
        "command": session.current_command,
    }
