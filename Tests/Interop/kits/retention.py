"""Deleted-mail retention (issue 18) as the tests drive it: `postie mailbox deleted|undelete|export`
on a server's store, Python's poplib views of a mailbox, and the retention area on disk
(`postie-deleted/` and `postie-deleted.index`, see Sources/MaildirStore/RetentionArea.swift).

Standard library only.
"""

from __future__ import annotations

import json
import poplib
import subprocess
import time
from pathlib import Path

AREA = "postie-deleted"
INDEX = "postie-deleted.index"


class MailboxCLI:
    """`postie mailbox ...` with the store flags of the server it goes with."""

    def __init__(self, binary: Path, passwd: Path, maildir_template: str, extra: list[str] | None = None):
        self.binary = binary
        self.store = ["--passwd-file", str(passwd), "--maildir", str(maildir_template)] + list(extra or [])

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.binary), "mailbox", *args, *self.store], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"postie mailbox {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def deleted(self, user: str) -> list[dict]:
        """The retained messages (`mailbox deleted USER --json`)."""
        doc = json.loads(self.run("deleted", user, "--json").stdout)
        assert isinstance(doc, list), f"mailbox deleted --json printed {doc!r}, want an array"
        return doc

    def deleted_uidls(self, user: str) -> set[str]:
        listed = [m["uidl"] for m in self.deleted(user)]
        assert len(listed) == len(set(listed)), f"mailbox deleted lists a UIDL twice: {sorted(listed)}"
        return set(listed)

    def undelete(self, user: str, *selection: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("undelete", user, *selection, check=check)

    def export(self, user: str, target: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("export", user, "--to", target, *extra, check=check)

    def wait_deleted(self, user: str, until, timeout: float, what: str) -> list[dict]:
        """Polls `mailbox deleted --json` until `until(listing)` holds; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            listing = self.deleted(user)
            if until(listing):
                return listing
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout}s; mailbox deleted lists {len(listing)}: "
                                     f"{[m['uidl'] for m in listing][:10]}")
            time.sleep(0.2)


def restored_count(r: subprocess.CompletedProcess) -> int:
    """The N of `N messages restored for USER`, checked against the `restored U (S octets)` lines."""
    lines = r.stdout.splitlines()
    assert lines and lines[-1].endswith(" restored for " + lines[-1].split()[-1]), f"undelete printed {r.stdout!r}"
    n = int(lines[-1].split()[0])
    assert sum(1 for l in lines if l.startswith("restored ")) == n, f"undelete printed {r.stdout!r}"
    return n


def pop_login(host: str, port: int, user: str, password: str) -> poplib.POP3:
    p = poplib.POP3(host, port, timeout=30)
    p.user(user)
    p.pass_(password)
    return p


def pop_uidls(p: poplib.POP3) -> dict[int, str]:
    """Message number -> UIDL (poplib's UIDL listing), checked for duplicates."""
    out = {}
    for line in p.uidl()[1]:
        n, u = line.decode().split()
        out[int(n)] = u
    assert len(set(out.values())) == len(out), f"a UIDL listed twice: {sorted(out.values())}"
    return out


def pop_messages(p: poplib.POP3) -> dict[str, bytes]:
    """UIDL -> the message as poplib retrieves it (dot-stuffing undone, CRLF line ends)."""
    sizes = {int(l.split()[0]): int(l.split()[1]) for l in p.list()[1]}
    out = {}
    for n, u in pop_uidls(p).items():
        body = b"".join(l + b"\r\n" for l in p.retr(n)[1])
        assert len(body) == sizes[n], f"UIDL {u}: LIST says {sizes[n]} octets, RETR gave {len(body)}"
        out[u] = body
    return out


def pop_view(host: str, port: int, user: str, password: str) -> dict[str, bytes]:
    """A whole session: login, every message by UIDL, QUIT."""
    p = pop_login(host, port, user, password)
    try:
        return pop_messages(p)
    finally:
        p.quit()


def area_records(maildir: Path) -> list[dict]:
    """The lines of `postie-deleted.index` (base name, UID, size, deleted at, address, UIDL, fields)."""
    path = Path(maildir) / INDEX
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    assert lines[0] == "POSTIE-DELETED 1", f"{path}: first line {lines[0]!r}"
    out = []
    for line in lines[1:]:
        base, uid, size, at, addr, uidl, fields = line.split("\t")
        out.append({"base": base, "uid": int(uid), "size": int(size), "deleted_at": int(at), "address": addr,
                    "uidl": uidl, "fields": fields})
    return out


def area_files(maildir: Path) -> dict[str, str]:
    """Base name -> file name of the messages in `postie-deleted/`."""
    d = Path(maildir) / AREA
    return {f.name.split(":")[0]: f.name for f in d.iterdir()} if d.is_dir() else {}


def cur_bases(maildir: Path) -> set[str]:
    out = set()
    for sub in ("cur", "new"):
        d = Path(maildir) / sub
        if d.is_dir():
            out.update(f.name.split(":")[0] for f in d.iterdir())
    return out


def tombstones(maildir: Path) -> set[str]:
    """The base names `postie-uidlist` marks deleted (`D name` lines: an UPDATE past its commit point)."""
    path = Path(maildir) / "postie-uidlist"
    if not path.exists():
        return set()
    return {l[2:] for l in path.read_text().splitlines() if l.startswith("D ")}
