"""`postie serve` on Maildir: mail delivered during a session appears in the next, new/ moves to
cur/ with UIDLs stable across restarts, a message renamed or removed by another program during
a session, the Maildir created on first login.
"""

from __future__ import annotations

import os

from conftest import note
from kits.mail import ALICE, BOB, canonical_crlf, CRLF
from kits.pop3 import POP3Raw, login_within, snapshot
from kits.sessions import MSG1, MSG2, MSG3, numbers_by_content, session, three


def test_mail_delivered_during_a_session_appears_in_the_next(env):
    msgs = three(env)
    md = env.maildir("alice")
    c = session(env)
    before = c.stat()
    uidl = c.listing("UIDL")
    md.deliver(b"Subject: during\n\nnew\n")
    # A half-written delivery in tmp/ is never a message.
    (md.path / "tmp" / "1700000000.M9P9.inprogress").write_bytes(b"Subject: partial\n\n")
    assert c.stat() == before, "mail delivered during the session appeared in it (the snapshot must not change)"
    assert c.listing("UIDL") == uidl
    c.ok("QUIT")
    c = session(env)
    assert c.stat()[0] == 4, "mail delivered during the previous session is missing"
    new = c.listing("UIDL")
    assert set(uidl.values()) < set(new.values()), "UIDLs changed across sessions"
    c.ok("QUIT")


def test_new_moves_to_cur_and_uidls_are_stable_across_restarts(env):
    three(env)
    md = env.maildir("alice")
    c = session(env)
    snap1 = snapshot(c)
    new_left = list((md.path / "new").iterdir())
    cur = [p.name for p in (md.path / "cur").iterdir()]
    c.ok("QUIT")
    assert not new_left, f"new/ not emptied at login: {new_left}"
    assert len(cur) == 3 and all(":2," in n for n in cur), f"cur/ after login: {cur}"
    env.server.stop()
    env.restart()
    c = session(env)
    assert snapshot(c) == snap1, "UIDLs or content changed across a server restart"
    c.ok("QUIT")


def test_message_renamed_or_removed_by_another_program_during_a_session(env):
    """Another Maildir user (an IMAP server, a MUA) may rename a file to change its
    flags or delete it while a POP3 session is open. Nothing in RFC 1939 fixes the
    reply, but the session and the server must survive, and other messages must
    still be served."""
    msgs = three(env)
    md = env.maildir("alice")
    c = session(env)
    nums = numbers_by_content(c, msgs)
    files = sorted((md.path / "cur").iterdir())
    by_content = {canonical_crlf(p.read_bytes()): p for p in files}
    f1 = by_content[canonical_crlf(MSG1)]
    f2 = by_content[canonical_crlf(MSG2)]
    os.rename(f1, f1.with_name(f1.name.split(":")[0] + ":2,S"))
    f2.unlink()
    r1 = c.cmd(f"RETR {nums[0]}")
    if r1.startswith("+OK"):
        body = b"".join(l + CRLF for l in c.read_multiline())
        assert body == canonical_crlf(MSG1), "RETR of a message whose flags changed returned other bytes"
    r2 = c.cmd(f"RETR {nums[1]}")
    if r2.startswith("+OK"):
        c.read_multiline()
    assert c.retr(nums[2]) == canonical_crlf(MSG3)
    c.ok(f"DELE {nums[2]}")
    q = c.cmd("QUIT")
    note(f"file renamed to :2,S during the session: RETR -> {r1!r}; file deleted: RETR -> {r2!r}; QUIT -> {q!r}")
    assert env.server.alive()
    c2, _ = login_within(env.host, env.port, ALICE, 30)
    left = {c2.retr(n) for n in c2.listing("LIST")}
    c2.ok("QUIT")
    assert canonical_crlf(MSG1) in left, "the renamed (flagged) message is gone"
    if q.startswith("+OK"):
        assert canonical_crlf(MSG3) not in left, "QUIT answered +OK but the DELEted message is still there"


def test_maildir_created_on_first_login(env):
    md = env.maildir("bob")
    assert not md.path.exists()
    c = session(env, BOB)
    assert c.stat() == (0, 0)
    r, lines = c.multi("LIST")
    assert r.startswith("+OK") and lines == []
    c.ok("QUIT")
    for d in ("cur", "new", "tmp"):
        assert (md.path / d).is_dir(), f"{d}/ not created on first login"


def test_much_new_mail_moves_to_cur_while_the_session_goes_on(env):
    """From 1,000 new messages on, the first login answers from new/ and the files move to cur/
    meanwhile. RETR works at once, a reconnect after a dropped connection gets in (it waits for
    the move, not [IN-USE]), and QUIT's deletions find every file in cur/."""
    md = env.maildir("alice")
    count = 1_500
    for i in range(count):
        md.deliver(f"Subject: bulk {i}\n\nbody {i}\n".encode())
    c = session(env)
    assert c.stat()[0] == count
    uidl = c.listing("UIDL")
    assert c.retr(count) == canonical_crlf(f"Subject: bulk {count - 1}\n\nbody {count - 1}\n".encode()), "the newest message"
    c.close()  # dropped: nothing is deleted, and the move goes on
    r = POP3Raw(env.host, env.port)
    reply = r.try_login(*ALICE)
    assert reply.startswith("+OK"), f"login after a dropped session during the move: {reply}"
    assert not list((md.path / "new").iterdir()), "new/ not emptied once the move ended"
    assert len(list((md.path / "cur").iterdir())) == count
    assert r.listing("UIDL") == uidl, "UIDLs changed across the move"
    r.ok("DELE 1")
    r.ok("DELE 1500")
    r.ok("QUIT")
    assert len(list((md.path / "cur").iterdir())) == count - 2
    c = session(env)
    assert c.stat()[0] == count - 2
    c.ok("QUIT")
