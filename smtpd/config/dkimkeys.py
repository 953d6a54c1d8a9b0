# -*- test-case-name: tests.test_config_mailauth -*-
"""
C{[domain:NAME] dkim}: "selector:keyfile" pairs. Each key file is read and
its type decides the algorithm (RSA -> rsa-sha256, Ed25519 ->
ed25519-sha256), so a missing or wrong key is one configuration error at
start, not a failure on the first message.
"""

from __future__ import annotations

import re
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from smtpd.config.model import DKIMSelector
from smtpd.config.values import parse_list, parse_path

EXPECTED = (
    '"selector:keyfile" pairs such as "s1:etc/dkim/example.com.rsa '
    'e1:etc/dkim/example.com.ed25519" (PEM RSA or Ed25519 private keys), or empty'
)
# RFC 6376 3.1: a selector is one or more DNS labels.
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
# RFC 8301 3.2: shorter RSA keys are refused by verifiers.
RSA_MIN_BITS = 1024


def is_selector(text: str) -> bool:
    """Whether C{text} can be a DKIM selector: one or more DNS labels."""
    return bool(_SELECTOR.match(text))


def parse_dkim(text: str, root: str) -> tuple[DKIMSelector, ...]:
    """The pairs in C{text}, key paths resolved against C{root}; ValueError names the bad one."""
    pairs: list[DKIMSelector] = []
    for item in parse_list(text):
        selector, colon, path = item.partition(":")
        if not colon or not path:
            raise ValueError(f"{item!r} is not selector:keyfile")
        if not is_selector(selector):
            raise ValueError(f"{selector!r} is not a selector (DNS labels)")
        if any(p.selector.lower() == selector.lower() for p in pairs):
            raise ValueError(f"selector {selector} given twice")
        full = parse_path(path, root)
        pairs.append(DKIMSelector(selector, full, key_file_algorithm(full)))
    return tuple(pairs)


ARC_EXPECTED = "empty, or one selector:keyfile pair with a PEM RSA private key"


def parse_arc_seal(text: str, root: str) -> DKIMSelector | None:
    """The ARC sealing key: one pair, RSA (RFC 8617 3.3 allows rsa-sha256 only)."""
    pairs = parse_dkim(text, root)
    if not pairs:
        return None
    if len(pairs) > 1:
        raise ValueError("more than one pair")
    if pairs[0].algorithm != "rsa-sha256":
        raise ValueError(f"{pairs[0].path} is not an RSA key")
    return pairs[0]


def key_file_algorithm(path: str) -> str:
    """The DKIM algorithm of the PEM private key in C{path}; ValueError says what is wrong."""
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return key_algorithm(load_pem_key(pem))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def load_pem_key(pem: bytes) -> Any:
    """The private key in C{pem} (cryptography); ValueError says why there is none."""
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError as e:
        raise ValueError("the key is encrypted; expected an unencrypted PEM key") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ValueError("not a PEM private key") from e


def key_algorithm(key: Any) -> str:
    """The DKIM algorithm a private key signs with (RSA -> rsa-sha256, Ed25519 -> ed25519-sha256)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519-sha256"
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_MIN_BITS:
            raise ValueError(f"an RSA key of {key.key_size} bits, under {RSA_MIN_BITS}")
        return "rsa-sha256"
    raise ValueError("neither an RSA nor an Ed25519 key")
