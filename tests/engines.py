"""
Finding the real engines (Postfix, OpenLDAP, Dovecot, HAProxy, Chromium, ...) that
interop tests and benchmarks run beside smtpd.

`make engines` installs them from Debian packages. A test that needs one skips,
naming the package to install, only when its binary is not installed:

    from tests.engines import find_engine, skip_unless

    class SlapdTests(TestCase):
        skip = skip_unless("slapd", "ldapadd")

        def test_bind(self):
            slapd = find_engine("slapd")
            ...
"""

from __future__ import annotations

import os
import shutil

# Folders searched after PATH: daemons live in sbin folders that a non-root PATH
# lacks, and some helpers only in their package's private folder (Dovecot's
# before Postfix's: both have an "lmtp"; ask for "postfix/lmtp" for Postfix's).
EXTRA_DIRS = (
    "/usr/sbin",
    "/sbin",
    "/usr/local/sbin",
    "/usr/lib/dovecot",
    "/usr/lib/postfix/sbin",
    "/usr/lib/chromium",
)

# "package/program" names: a program in one package's private folder only.
PRIVATE_DIRS = {
    "postfix": "/usr/lib/postfix/sbin",
    "dovecot": "/usr/lib/dovecot",
}

# Engine binary -> the Debian package that provides it.
PACKAGES = {
    "postfix": "postfix",
    "postconf": "postfix",
    "postqueue": "postfix",
    "sendmail": "postfix",
    "smtp-source": "postfix",
    "smtp-sink": "postfix",
    "master": "postfix",
    "virtual": "postfix",
    "swaks": "swaks",
    "slapd": "slapd",
    "slapadd": "slapd",
    "slappasswd": "slapd",
    "ldapsearch": "ldap-utils",
    "ldapadd": "ldap-utils",
    "ldapmodify": "ldap-utils",
    "ldapwhoami": "ldap-utils",
    "dovecot": "dovecot-core",
    "doveadm": "dovecot-core",
    "imap": "dovecot-imapd",
    "pop3": "dovecot-pop3d",
    "lmtp": "dovecot-lmtpd",
    "haproxy": "haproxy",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "fetchmail": "fetchmail",
    "systemd-analyze": "systemd",
    "systemd-socket-activate": "systemd",
    "unshare": "util-linux",
    "logrotate": "logrotate",
}


def find_engine(name: str) -> str | None:
    """
    The full path of the executable C{name}: searched on PATH, then in the sbin
    and package folders of L{EXTRA_DIRS}; C{None} when it is not installed.
    C{"postfix/lmtp"} or C{"dovecot/imap"} looks only in that package's private
    folder.
    """
    package, _, program = name.rpartition("/")
    if package:
        folder = PRIVATE_DIRS.get(package)
        return shutil.which(program, path=folder) if folder else None
    found = shutil.which(name)
    if found:
        return found
    return shutil.which(name, path=os.pathsep.join(EXTRA_DIRS))


def package_of(name: str) -> str:
    """The Debian package providing engine C{name} (the name itself when unknown)."""
    package, _, program = name.rpartition("/")
    if package == "postfix":
        return "postfix"
    if package == "dovecot":
        return PACKAGES.get(program, "dovecot-core")
    return PACKAGES.get(program, program)


def skip_unless(*names: str) -> str | None:
    """
    A trial skip reason when any of the engines C{names} is not installed,
    naming the Debian packages to install; C{None} when all are there. Assign it
    to a TestCase's or test method's C{skip} attribute.
    """
    missing = [name for name in names if find_engine(name) is None]
    if not missing:
        return None
    packages = sorted({package_of(name) for name in missing})
    return (f"{', '.join(missing)} not installed: run 'make engines' as root, "
            f"or apt-get install {' '.join(packages)}")
