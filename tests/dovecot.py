"""
A real Dovecot LMTP server for tests: a private instance (its own base_dir,
config and log) serving only LMTP on a free loopback port and on a UNIX
socket, users from a passwd-file, Maildirs in a temporary folder, and the
quota plugin with a tiny limit for one user. L{DOVECOT_MISSING} is the reason
to skip when Debian's dovecot-core and dovecot-lmtpd are not installed.
"""

from __future__ import annotations

import glob
import os
import pwd

from tests.engineproc import EngineProcess, free_port, start_engine
from tests.engines import find_engine, skip_unless

DOVECOT_MISSING = skip_unless("dovecot", "dovecot/lmtp")

CONFIG = """
base_dir = {folder}/run
state_dir = {folder}/state
instance_name = smtpd-test-{port}
protocols = lmtp
listen = 127.0.0.1
log_path = {folder}/dovecot.log
ssl = no
default_internal_user = {user}
default_login_user = {user}
default_internal_group = {group}
first_valid_uid = {uid}
last_valid_uid = {uid}
auth_mechanisms = plain
mail_location = maildir:~/Maildir
mail_plugins = quota
lmtp_rcpt_check_quota = no
quota_full_tempfail = {tempfail}
passdb {{
  driver = passwd-file
  args = {folder}/users
}}
userdb {{
  driver = passwd-file
  args = {folder}/users
}}
plugin {{
  quota = maildir:User quota
  quota_rule = *:storage=100M
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    path = lmtp
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
"""


class Dovecot:
    """One private Dovecot: L{start}, L{stop}, the store's L{messages}."""

    def __init__(self, folder: str, users: dict[str, str], tempfail: bool = False) -> None:
        """
        @param users: address -> extra userdb fields (e.g. a quota rule).
        @param tempfail: over quota is a temporary failure (452), not 552.
        """
        self.folder = folder
        self.port = free_port()
        self.engine = EngineProcess("dovecot", self.port, timeout=15.0,
                                    ready=lambda: os.path.exists(self.socket_path), log=self.log)
        account = pwd.getpwnam("dovecot")
        self.uid, self.gid = account.pw_uid, account.pw_gid
        for sub in ("run", "state", "mail"):
            os.makedirs(os.path.join(folder, sub))
        os.chown(os.path.join(folder, "mail"), self.uid, self.gid)
        with open(os.path.join(folder, "users"), "w") as f:
            for address, extra in users.items():
                home = self.home(address)
                f.write(f"{address}::{self.uid}:{self.gid}::{home}::{extra}\n")
        self.config = os.path.join(folder, "dovecot.conf")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(folder=folder, port=self.port, user=account.pw_name,
                                  group=account.pw_name, uid=self.uid,
                                  tempfail='yes' if tempfail else 'no'))

    @property
    def socket_path(self) -> str:
        """The LMTP UNIX socket."""
        return os.path.join(self.folder, "run", "lmtp")

    def home(self, address: str) -> str:
        """The home folder of C{address}."""
        return os.path.join(self.folder, "mail", address)

    def messages(self, address: str) -> list[bytes]:
        """The messages in the INBOX of C{address}, oldest first."""
        found = []
        for path in sorted(glob.glob(os.path.join(self.home(address), "Maildir", "new", "*"))
                           + glob.glob(os.path.join(self.home(address), "Maildir", "cur", "*"))):
            with open(path, "rb") as f:
                found.append(f.read())
        return found

    def start(self) -> None:
        """Run dovecot in the foreground (-F) and wait for its LMTP port and socket."""
        self.engine.start([find_engine("dovecot"), "-F", "-c", self.config])

    def log(self) -> str:
        """Dovecot's log so far."""
        try:
            with open(os.path.join(self.folder, "dovecot.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop dovecot and wait for it."""
        self.engine.stop()


def start_dovecot(case, users: dict[str, str], tempfail: bool = False) -> Dovecot:
    """A started L{Dovecot} in a temporary folder, stopped and removed at cleanup."""
    return start_engine(case, "dovecot-", lambda folder: Dovecot(folder, users, tempfail),
                        mode=0o755)
