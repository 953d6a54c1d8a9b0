# -*- test-case-name: tests.test_privilege -*-
"""
Who owns the deployment's files. smtpd runs as an unprivileged user (twistd
C{--uid}); whatever root creates for it (at start, before twistd drops
privileges, or with C{smtpctl}) must end up belonging to that user, or the
server cannot read or write it later.
"""

from __future__ import annotations

import os
import pwd


def user_name(uid: int) -> str:
    """The login name of C{uid}, or the number when it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def running_as_root() -> bool:
    """Whether this process has root's file access (effective uid 0)."""
    return os.geteuid() == 0


def owner(path: str) -> tuple[int, int] | None:
    """The (uid, gid) that own C{path}, or L{None} when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_gid


def give(path: str, uid: int, gid: int) -> bool:
    """Give C{path} (not a symlink's target) to C{uid}:C{gid}; whether it changed."""
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) == (uid, gid):
        return False
    os.lchown(path, uid, gid)
    return True


def give_tree(top: str, uid: int, gid: int) -> int:
    """
    Give C{top} and everything below it to C{uid}:C{gid}, never following a
    symlink; how many entries changed owner.
    """
    if not os.path.lexists(top):
        return 0
    changed = int(give(top, uid, gid))
    for folder, subfolders, files in os.walk(top):
        for name in subfolders + files:
            changed += give(os.path.join(folder, name), uid, gid)
    return changed


def hand_over_to_deployment(path: str, mailroot: str) -> str | None:
    """
    Run as root, give C{path} (a file just written) to the owner of
    C{mailroot} when that is another user: the deployment's files must stay
    readable by the user the server runs as. Returns that user's name when
    C{path} was handed over, else L{None} (not root, no mailroot yet, or a
    mailroot that root owns).
    """
    if not running_as_root():
        return None
    deployment = owner(mailroot)
    if deployment is None or deployment[0] == 0:
        return None
    give(path, *deployment)
    return user_name(deployment[0])


def _inside(path: str, root: str) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(root)
    return os.path.commonpath([path, root]) == root


def hand_over_deployment(root: str, mailroot: str, files: list[str],
                         uid: int, gid: int) -> list[str]:
    """
    Before twistd drops privileges (C{--uid}/C{--gid}): give the user the
    server will run as what root made for it or left behind. The mailroot
    becomes the user's, wholly when its top folder belongs to someone else
    (a first start, an old root-run deployment), else its own folders only;
    each of C{files} (the certificate's folder, certificate, key, accounts
    file, log) that exists inside the deployment C{root} too (nothing outside
    it, such as a certificate under /etc, is touched). Returns the paths that
    changed owner.
    """
    changed = []
    if owner(mailroot) != (uid, gid):
        if give_tree(mailroot, uid, gid):
            changed.append(mailroot)
    elif os.path.isdir(mailroot):
        for name in sorted(os.listdir(mailroot)):
            path = os.path.join(mailroot, name)
            if os.path.isdir(path) and not os.path.islink(path) and give(path, uid, gid):
                changed.append(path)
    for path in files:
        if not _inside(path, root) or not os.path.lexists(path) or os.path.islink(path):
            continue
        if give(path, uid, gid):
            changed.append(path)
    return changed
