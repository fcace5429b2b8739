"""A `postie fetch` that fails part-way exits non-zero and its JSON summary says what happened:
a message the server refuses, a dropped connection, a message far larger than listed, broken
UIDLs (from a scripted server, kits/scripted.py), an unreadable message in Dovecot.
"""

from __future__ import annotations

import poplib
from pathlib import Path

import pytest

from kits.fetch import account, local_messages, msgs, run_fetch
from kits.launcher import HOST
from kits.mail import canonical_crlf
from kits.scripted import ScriptedServer, ScriptedSession


# --------------------------------------------------------------------------
# 3. partial failures: a refused message, a dropped connection, a broken server
# --------------------------------------------------------------------------


class ScriptedPOP3(ScriptedServer):
    """A misbehaving POP3 server: fixed messages and UIDLs, RETR refused or the connection
    dropped for chosen messages. Records the commands it received."""

    replies = {**ScriptedServer.replies, "DELE": "+OK"}

    def __init__(self, messages: list[bytes], uidls: list[str | None], refuse: set[int] = frozenset(),
                 drop_on: int | None = None, flood_on: int | None = None):
        self.flood_on = flood_on
        self.messages = messages
        self.uidls = uidls
        self.refuse = refuse
        self.drop_on = drop_on
        super().__init__()

    def command(self, s: ScriptedSession, word: str, args: list[str]) -> bool:
        if word == "UIDL":
            s.listing([f"{i + 1} {u}" for i, u in enumerate(self.uidls) if u is not None])
        elif word == "LIST":
            s.listing([f"{i + 1} {len(canonical_crlf(m))}" for i, m in enumerate(self.messages)])
        elif word == "RETR":
            n = int(args[0])
            if n in self.refuse:
                s.reply("-ERR [SYS/PERM] Message could not be read")
            elif n == self.flood_on:
                s.send(b"+OK\r\n" + (b"x" * 98 + b"\r\n") * 40000)
                return False
            elif n == self.drop_on:
                s.send(b"+OK\r\nSubject: half\r\n")
                return False
            else:
                s.message(self.messages[n - 1])
        else:
            return super().command(s, word, args)
        return True


@pytest.fixture
def scripted():
    servers = []

    def make(*a, **kw):
        s = ScriptedPOP3(*a, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def fetch_from(postie_bin: Path, s: ScriptedPOP3, out: Path) -> tuple[int, dict | None, str, str]:
    """`postie fetch` from the scripted server `s` into the Maildir `out`."""
    return run_fetch(postie_bin, ["--server", f"{HOST}:{s.port}", "--tls", "none", "--user", "u",
                                  "--to", f"maildir:{out}"], password="pw")


def test_refused_message_is_reported_and_kept(scripted, postie_bin, tmp_path):
    s = scripted(msgs(4), ["u1", "u2", "u3", "u4"], refuse={2})
    out = tmp_path / "Maildir"
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 1, err
    a = account(doc)
    assert (a["status"], a["fetched"], a["failed"], a["deleted"]) == ("partial", 3, 1, 3), a
    assert a["failures"] == [{"number": 2, "uidl": "u2", "reason": "RETR refused: -ERR [SYS/PERM] Message could not be read"}]
    assert "DELE 2" not in s.commands and "DELE 1" in s.commands and "QUIT" in s.commands
    assert doc["exit_code"] == 1


def test_dropped_connection_deletes_nothing_and_says_where(scripted, postie_bin, tmp_path):
    s = scripted(msgs(5), ["u1", "u2", "u3", "u4", "u5"], drop_on=3)
    out = tmp_path / "Maildir"
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 2, err
    a = account(doc)
    assert (a["status"], a["fetched"], a["deleted"]) == ("failed", 2, 0), a
    assert "RETR 3" in a["error"] and "closed the connection" in a["error"], a
    assert "QUIT" not in s.commands
    assert len(local_messages(out)) == 2
    # Once the server is healthy again, the re-run fetches only the rest and deletes all five.
    s.drop_on = None
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 0, err
    a = account(doc)
    assert (a["status"], a["fetched"], a["skipped"], a["deleted"]) == ("ok", 3, 2, 5), a
    assert sorted(local_messages(out)) == sorted(msgs(5))


def test_a_message_far_larger_than_listed_ends_the_session(scripted, postie_bin, tmp_path):
    s = scripted(msgs(3), ["u1", "u2", "u3"], flood_on=2)
    out = tmp_path / "Maildir"
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 2, err
    a = account(doc)
    assert (a["status"], a["fetched"], a["deleted"]) == ("failed", 1, 0), a
    assert "RETR 2: the server sent over" in a["error"], a
    assert "QUIT" not in s.commands
    assert len(local_messages(out)) == 1


def test_duplicate_and_missing_uidls_are_left_alone_with_a_warning(scripted, postie_bin, tmp_path):
    s = scripted(msgs(5), ["u1", "same", "same", None, "u5"])
    out = tmp_path / "Maildir"
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 1, err
    a = account(doc)
    assert (a["fetched"], a["failed"], a["deleted"]) == (2, 3, 2), a
    assert any("same UIDL same" in w for w in a["warnings"]), a
    assert any("message 4 has no UIDL" in w for w in a["warnings"]), a
    assert "warning" in err
    for n in (2, 3, 4):
        assert f"RETR {n}" not in s.commands and f"DELE {n}" not in s.commands


def test_unreadable_message_in_dovecot_fails_part_way(dovecot, postie_bin, tmp_path):
    d = dovecot({"dave": "pw-dave"})
    names = [d.maildir("dave").deliver(f"Subject: {i}\n\nbody {i}\n".encode()) for i in range(4)]
    d.fix_ownership()
    # Let Dovecot index the mailbox first (names move to cur/), then take read access away from one file.
    p = poplib.POP3(d.host, d.port, timeout=10)
    p.user("dave")
    p.pass_("pw-dave")
    p.quit()
    victim = next(f for f in d.maildir("dave").message_files() if f.name.startswith(names[1]))
    victim.chmod(0)
    out = tmp_path / "Maildir"
    code, doc, _, err = run_fetch(postie_bin, ["--server", f"{HOST}:{d.port}", "--tls", "none", "--user", "dave",
                                               "--to", f"maildir:{out}"], password="pw-dave")
    a = account(doc)
    # Dovecot answers "-ERR Message 2 expunged." for a file it cannot read.
    assert code == 1, a
    assert (a["status"], a["fetched"], a["failed"], a["deleted"]) == ("partial", 3, 1, 3), a
    assert [(f["number"], f["reason"].startswith("RETR refused: -ERR")) for f in a["failures"]] == [(2, True)], a
    assert doc["exit_code"] == 1
    # Nothing was lost: the refused message is still in the server's Maildir, the rest are local.
    assert victim.exists()
    assert len(local_messages(out)) == 3
    assert [p.name for p in d.maildir("dave").message_files()] == [victim.name]
