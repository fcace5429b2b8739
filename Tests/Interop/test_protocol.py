"""RFC 1939 / RFC 2449 edge cases over a real socket."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path


from conftest import note
from kits.launcher import free_port
from kits.mail import ALICE, BOB, canonical_crlf, corpus, CRLF, Maildir
from kits.pop3 import login_within, POP3Raw, ProtocolError, snapshot

MSG1 = b"From: a@example.org\nSubject: first\n\nline 1\n.line 2\nline 3\nline 4\n"
MSG2 = b"From: b@example.org\nSubject: second\n\n..body\n"
MSG3 = b"From: c@example.org\nSubject: third\n\nthree\n"


def three(env) -> list[bytes]:
    md = env.maildir("alice")
    msgs = [MSG1, MSG2, MSG3]
    for m in msgs:
        md.deliver(m)
    return msgs


def session(env, user=ALICE) -> POP3Raw:
    """A logged-in session. A previous session of this test may have just sent QUIT;
    a short [IN-USE] window after its +OK is tolerated here (and reported)."""
    c, waited = login_within(env.host, env.port, user, 30)
    assert c.greeting.startswith(b"+OK"), f"greeting {c.greeting!r}"
    if waited > 0.05:
        note(f"login needed {waited * 1000:.0f} ms of [IN-USE] retries after the previous session ended")
    return c


def numbers_by_content(c: POP3Raw, msgs: list[bytes]) -> list[int]:
    """Message numbers in the session for each of `msgs` (order on the server is not contractual)."""
    want = {canonical_crlf(m): i for i, m in enumerate(msgs)}
    out = [0] * len(msgs)
    for n in sorted(c.listing("LIST")):
        out[want[c.retr(n)]] = n
    return out


def top_expected(data: bytes, k: int) -> bytes:
    lines = canonical_crlf(data).split(CRLF)[:-1]
    h = lines.index(b"")
    return b"".join(l + CRLF for l in lines[: h + 1 + k])


def alive(c: POP3Raw) -> None:
    r = c.cmd("NOOP")
    assert r.startswith("+OK"), f"session broken after the previous command: NOOP got {r!r}"


# --------------------------------------------------------------------------


def test_greeting_and_quit_in_authorization_state(env):
    c = POP3Raw(env.host, env.port)
    assert c.greeting.startswith(b"+OK"), f"greeting {c.greeting!r}"
    assert c.cmd("QUIT").startswith("+OK")
    c.expect_closed()


def test_pipelined_commands_are_answered_in_order(env):
    msgs = three(env)
    c = POP3Raw(env.host, env.port)
    c.send(f"USER {ALICE[0]}\r\nPASS {ALICE[1]}\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nLIST 3\r\n"
           f"NOOP\r\nDELE 1\r\nSTAT\r\nRSET\r\nQUIT\r\n")
    assert c.reply().startswith("+OK"), "USER"
    assert c.reply().startswith("+OK"), "PASS"
    stat = c.reply()
    total = sum(len(canonical_crlf(m)) for m in msgs)
    assert stat.split()[:3] == ["+OK", "3", str(total)], f"pipelined STAT got {stat!r}"
    assert c.reply().startswith("+OK")
    assert len(c.read_multiline()) == 3, "pipelined LIST"
    assert c.reply().startswith("+OK")
    assert len(c.read_multiline()) == 3, "pipelined UIDL"
    assert c.reply().startswith("+OK")
    body1 = b"".join(l + CRLF for l in c.read_multiline())
    assert body1 in {canonical_crlf(m) for m in msgs}, "pipelined RETR 1 body"
    assert c.reply().startswith("+OK")
    top2 = b"".join(l + CRLF for l in c.read_multiline())
    assert top2 in {top_expected(m, 0) for m in msgs}, f"pipelined TOP 2 0 got {top2!r}"
    r = c.reply()
    assert re.match(r"\+OK 3 \d+", r), f"pipelined LIST 3 got {r!r}"
    assert c.reply().startswith("+OK"), "NOOP"
    assert c.reply().startswith("+OK"), "DELE 1"
    r = c.reply()
    assert r.startswith("+OK 2 "), f"STAT after DELE got {r!r}"
    assert c.reply().startswith("+OK"), "RSET"
    assert c.reply().startswith("+OK"), "QUIT"
    c.expect_closed()
    c2 = session(env)
    assert c2.stat()[0] == 3, "RSET before QUIT must leave every message"
    c2.ok("QUIT")


def test_commands_are_case_insensitive(env):
    msgs = three(env)
    c = POP3Raw(env.host, env.port)
    c.ok(f"user {ALICE[0]}")
    c.ok(f"pAsS {ALICE[1]}")
    c.ok("stat")
    r, lines = c.multi("LiSt")
    assert r.startswith("+OK") and len(lines) == 3
    r, lines = c.multi("uidl")
    assert r.startswith("+OK") and len(lines) == 3
    r, lines = c.multi("retr 1")
    assert r.startswith("+OK"), f"'retr 1' got {r!r}"
    r, lines = c.multi("ToP 1 0")
    assert r.startswith("+OK"), f"'ToP 1 0' got {r!r}"
    c.ok("noop")
    c.ok("dele 1")
    c.ok("rset")
    r, lines = c.multi("capa")
    assert r.startswith("+OK")
    assert c.cmd("qUiT").startswith("+OK")


def test_top_arguments(env):
    msgs = three(env)
    c = session(env)
    nums = numbers_by_content(c, msgs)
    n1 = nums[0]
    for bad in ["TOP", f"TOP {n1}", f"TOP {n1} -1", f"TOP 0 1", f"TOP 99 1", "TOP a b", f"TOP {n1} x",
                f"TOP -{n1} 1", f"TOP {n1} 1 1", "TOP 18446744073709551617 1"]:
        r = c.cmd(bad)
        assert r.startswith("-ERR"), f"{bad!r} got {r!r}, expected -ERR"
        alive(c)
    for k in (0, 1, 2, 4, 5, 99999999):
        r, lines = c.multi(f"TOP {n1} {k}")
        assert r.startswith("+OK"), f"TOP {n1} {k} got {r!r}"
        got = b"".join(l + CRLF for l in lines)
        assert got == top_expected(MSG1, k), f"TOP {n1} {k}: got {got!r}, expected {top_expected(MSG1, k)!r}"
    # TOP must not count as a deletion or change anything.
    assert c.stat()[0] == 3
    c.ok("QUIT")


def test_no_final_newline_gets_exactly_one_crlf_appended(env):
    """A file not ending in LF is sent as its bytes (LF -> CRLF) plus one CRLF; the
    size counts that CRLF. A last line of just "." is then stuffed to "..".
    A 0-byte file is an empty message: "+OK", then the terminator alone."""
    md = env.maildir("alice")
    a = b"Subject: a\n\nfirst\nlast line without newline"
    b = b"Subject: b\n\nx\n."
    for m in (a, b, b""):
        md.deliver(m)
    c = session(env)
    sizes = c.listing("LIST")
    want = {len(a) + a.count(b"\n") + 2: (a, b"Subject: a\r\n\r\nfirst\r\nlast line without newline\r\n.\r\n"),
            len(b) + b.count(b"\n") + 2: (b, b"Subject: b\r\n\r\nx\r\n..\r\n.\r\n"),
            0: (b"", b".\r\n")}
    assert sorted(int(v) for v in sizes.values()) == sorted(want), f"LIST sizes {sizes}, expected {sorted(want)}"
    for n, size in sizes.items():
        r = c.cmd(f"RETR {n}")
        assert r.startswith("+OK"), f"RETR {n} got {r!r}"
        wire = c.read_multiline_wire()
        assert wire == want[int(size)][1], f"RETR {n} ({size} octets) sent {wire!r}, expected {want[int(size)][1]!r}"
    c.ok("QUIT")


def test_top_on_corpus_edge_messages(env):
    msgs = corpus()
    md = env.maildir("alice")
    for m in msgs.values():
        md.deliver(m)
    c = session(env)
    by_body = {canonical_crlf(m): lab for lab, m in msgs.items()}
    for n in sorted(c.listing("LIST")):
        lab = by_body[c.retr(n)]
        for k in (0, 1, 3, 100000):
            r, lines = c.multi(f"TOP {n} {k}")
            assert r.startswith("+OK"), f"TOP {n} {k} ({lab}) got {r!r}"
            got = b"".join(l + CRLF for l in lines)
            assert got == top_expected(msgs[lab], k), f"TOP {n} {k} of {lab!r} is wrong: {got[-120:]!r}"
    c.ok("QUIT")


def test_bad_message_numbers(env):
    three(env)
    c = session(env)
    for bad in ["RETR", "RETR 0", "RETR -1", "RETR 4", "RETR abc", "RETR 1 2", "RETR 99999999999999999999",
                "LIST 0", "LIST 4", "LIST x", "UIDL 0", "UIDL 4", "DELE 0", "DELE 4", "DELE", "STAT 1", "NOOP 1"]:
        r = c.cmd(bad)
        assert r.startswith("-ERR"), f"{bad!r} got {r!r}, expected -ERR"
    alive(c)
    assert c.stat()[0] == 3
    c.ok("QUIT")


def test_wrong_state_commands(env):
    three(env)
    c = POP3Raw(env.host, env.port)
    for cmd in ["STAT", "LIST", "RETR 1"]:
        r = c.cmd(cmd)
        assert r.startswith("-ERR"), f"{cmd!r} before login got {r!r}"
    c.close()
    c = POP3Raw(env.host, env.port)
    r = c.cmd(f"PASS {ALICE[1]}")
    assert r.startswith("-ERR"), f"PASS without USER got {r!r}"
    c.close()
    c = session(env)
    for cmd in [f"USER {ALICE[0]}", f"PASS {ALICE[1]}"]:
        r = c.cmd(cmd)
        assert r.startswith("-ERR"), f"{cmd.split()[0]} after login got {r!r}"
    alive(c)
    c.ok("QUIT")


def test_unsupported_commands_do_not_break_the_session(env):
    three(env)
    c = POP3Raw(env.host, env.port)
    r, caps = c.multi("CAPA")
    capnames = {l.split()[0].upper() for l in caps if l}
    if b"STLS" not in capnames:
        # An unexpected STLS (inbucket#515) and bytes pipelined after it.
        c.send(b"STLS\r\nCAPA\r\n")
        r = c.reply()
        assert r.startswith("-ERR"), f"STLS without TLS configured got {r!r}"
        r = c.reply()
        assert r.startswith("+OK"), f"CAPA after a refused STLS got {r!r}"
        c.read_multiline()
    r = c.cmd("APOP alice 0123456789abcdef0123456789abcdef")
    assert r.startswith("-ERR"), f"APOP (no timestamp in the greeting) got {r!r}"
    c.close()
    c = session(env)
    r = c.cmd("STLS")
    assert r.startswith("-ERR"), f"STLS in TRANSACTION state got {r!r}"
    alive(c)
    c.ok("QUIT")


def test_rset_unmarks(env):
    msgs = three(env)
    c = session(env)
    count, size = c.stat()
    c.ok("DELE 2")
    c.ok("DELE 3")
    assert c.stat()[0] == 1
    assert sorted(c.listing("LIST")) == [1], "LIST must omit messages marked deleted"
    r = c.ok("RSET")
    assert c.stat() == (count, size), "RSET did not restore STAT"
    assert sorted(c.listing("LIST")) == [1, 2, 3]
    assert c.retr(2), "RETR after RSET"
    c.ok("QUIT")
    c2 = session(env)
    assert c2.stat() == (count, size), "messages DELEted then RSET were deleted at QUIT"
    c2.ok("QUIT")


def test_dele_then_retr_is_err(env):
    three(env)
    c = session(env)
    uidl = c.listing("UIDL")
    c.ok("DELE 1")
    for cmd in ["RETR 1", "TOP 1 0", "LIST 1", "UIDL 1", "DELE 1"]:
        r = c.cmd(cmd)
        assert r.startswith("-ERR"), f"{cmd!r} after DELE 1 got {r!r} (RFC 1939: may not refer to a deleted message)"
    assert c.retr(2)
    # Numbers do not shift after DELE (RFC 1939 section 5).
    assert c.listing("UIDL") == {2: uidl[2], 3: uidl[3]}
    c.ok("QUIT")
    c2 = session(env)
    assert sorted(c2.listing("UIDL").values()) == sorted([uidl[2], uidl[3]]), "QUIT deleted the wrong message"
    c2.ok("QUIT")


def test_dropped_connection_after_dele_deletes_nothing(env):
    three(env)
    c = session(env)
    before = snapshot(c)
    for n in (1, 2, 3):
        c.ok(f"DELE {n}")
    c.close()  # FIN without QUIT
    c2, waited = login_within(env.host, env.port, ALICE, 30)
    assert snapshot(c2) == before, "a connection closed without QUIT deleted messages"
    c2.ok("QUIT")


def test_unknown_user_and_wrong_password_look_identical(env):
    """Same replies to USER and PASS, and about the same time before the PASS reply.

    Each attempt comes from its own loopback address, so that a per-IP failure
    delay (which grows with each failure) applies equally to all three."""
    three(env)
    replies = {}
    times = {}
    attempts = [("unknown user", "nosuchuser", "whatever1", "127.0.0.21"),
                ("wrong password", ALICE[0], "wrong-pw", "127.0.0.22"),
                ("wrong plain password", BOB[0], "wrong-pw", "127.0.0.23")]
    for label, user, pw, src in attempts:
        c = POP3Raw(env.host, env.port, source=src, timeout=40)
        u = c.cmd(f"USER {user}")
        t = time.monotonic()
        p = c.cmd(f"PASS {pw}") if u.startswith("+OK") else None
        times[label] = time.monotonic() - t
        replies[label] = (u, p)
        c.close()
    ref = replies["wrong password"]
    assert ref[1] is not None and ref[1].startswith("-ERR [AUTH]"), f"wrong password got {ref}"
    for label, rep in replies.items():
        assert rep == ref, f"{label} answered {rep}, wrong password answered {ref}: the replies reveal which users exist"
    note("auth failure timing (first failure per IP): " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items()))
    spread = max(times.values()) - min(times.values())
    assert spread < 1.0, f"PASS failure times differ by {spread * 1000:.0f} ms ({times}): timing reveals which users exist"


REQUIRED_CAPS = {"TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "EXPIRE", "LOGIN-DELAY",
                 "IMPLEMENTATION"}


def parse_capa(lines: list[bytes]) -> dict[str, list[str]]:
    caps = {}
    for l in lines:
        parts = l.decode().split()
        assert parts, "empty CAPA line"
        caps[parts[0].upper()] = parts[1:]
    return caps


def test_capa(env):
    three(env)
    c = POP3Raw(env.host, env.port)
    r, lines = c.multi("CAPA")
    assert r.startswith("+OK"), f"CAPA got {r!r}"
    caps = parse_capa(lines)
    missing = REQUIRED_CAPS - set(caps)
    assert not missing, f"CAPA before login lacks {sorted(missing)}; got {sorted(caps)}"
    assert len(caps["EXPIRE"]) >= 1 and re.fullmatch(r"NEVER|\d+", caps["EXPIRE"][0]), f"EXPIRE {caps['EXPIRE']}"
    # RFC 2449 6.5: "LOGIN-DELAY n", with "USER" before login when the value varies per user.
    assert caps["LOGIN-DELAY"][0].isdigit() and caps["LOGIN-DELAY"][1:] in ([], ["USER"]), f"LOGIN-DELAY {caps['LOGIN-DELAY']}"
    assert caps["IMPLEMENTATION"], "IMPLEMENTATION needs an argument"
    assert "SASL" not in caps or caps["SASL"], "SASL listed without mechanisms"
    c.login(*ALICE)
    r, lines = c.multi("CAPA")
    assert r.startswith("+OK"), f"CAPA after login got {r!r}"
    caps2 = parse_capa(lines)
    missing = (REQUIRED_CAPS - {"USER", "AUTH-RESP-CODE"}) - set(caps2)
    assert not missing, f"CAPA after login lacks {sorted(missing)}; got {sorted(caps2)}"
    c.ok("QUIT")


def test_long_lines(env):
    three(env)
    # A command line beyond RFC 2449's 255 octets but short enough to be read.
    c = POP3Raw(env.host, env.port)
    r = c.cmd("USER " + "a" * 300)
    assert r.startswith("-ERR"), f"300-octet USER line got {r!r}"
    c.close()
    # Far beyond any limit, after login: -ERR and the session goes on, or a clean close.
    for size in (10_000, 200_000):
        c = session(env)
        c.send(b"NOOP " + b"x" * size + b"\r\n")
        try:
            r = c.reply()
        except EOFError:
            note(f"a {size}-octet line: server closed the connection without a reply")
            continue
        except ProtocolError:
            raise
        assert r.startswith("-ERR"), f"a {size}-octet line got {r!r}"
        try:
            r = c.cmd("STAT")
        except (EOFError, ConnectionError):
            note(f"a {size}-octet line: -ERR, then the server closed the connection")
            continue
        assert r.startswith("+OK"), f"after a {size}-octet line, STAT got {r!r}"
        c.ok("QUIT")
    # A huge line that never ends must not grow the server without bound.
    c = POP3Raw(env.host, env.port)
    try:
        c.sock.settimeout(10)
        sent = 0
        chunk = b"z" * 65536
        while sent < 64 << 20:
            c.sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    c.close()
    # The server is still alive and serving.
    c = session(env)
    assert c.stat()[0] == 3
    c.ok("QUIT")


def test_too_many_bad_commands_end_the_session(env):
    three(env)
    for label, pre in [("before login", None), ("after login", ALICE)]:
        c = POP3Raw(env.host, env.port)
        if pre:
            c.login(*pre)
        errors = 0
        closed = False
        for i in range(60):
            try:
                r = c.cmd(f"BOGUS{i}")
            except (EOFError, ConnectionError):
                closed = True
                break
            assert r.startswith("-ERR"), f"BOGUS{i} got {r!r}"
            errors += 1
        assert closed, f"{label}: 60 unknown commands and the session is still open"
        note(f"bad commands {label}: closed after {errors} -ERR replies")
        c.close()


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


def try_login_fresh(env, user, password, source: str | None = None) -> str:
    c = POP3Raw(env.host, env.port, source=source, timeout=40)
    try:
        r = c.try_login(user, password)
        if r.startswith("+OK"):
            c.cmd("QUIT")
        return r
    finally:
        c.close()


def wait_for_login_result(env, user, password, want_ok: bool, timeout: float = 20.0) -> float:
    """Polls until the login result flips; returns when the first attempt that saw the
    change was started (failed attempts are slowed by the server, so that is not counted)."""
    t0 = time.monotonic()
    while True:
        started = time.monotonic()
        r = try_login_fresh(env, user, password)
        if r.startswith("+OK") == want_ok:
            return started - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"after editing the passwd-file, login as {user} still answers {r!r} after {timeout}s")
        time.sleep(0.2)


def test_passwd_file_changes_take_effect_without_restart(env):
    assert try_login_fresh(env, "dave", "dave-pw").startswith("-ERR [AUTH]")
    # In-place append, as `echo >> passwd` does.
    with open(env.passwd.path, "a") as f:
        f.write("dave:{PLAIN}dave-pw\n")
    env.passwd.entries["dave"] = "{PLAIN}dave-pw"
    w1 = wait_for_login_result(env, "dave", "dave-pw", True)
    # Atomic replace, as editors and config management do: change alice's password, drop dave.
    env.passwd.remove("dave").add(ALICE[0], "a-new-password", scheme="SHA512-CRYPT").write(atomic=True)
    w2 = wait_for_login_result(env, "dave", "dave-pw", False)
    wait_for_login_result(env, ALICE[0], "a-new-password", True)
    assert try_login_fresh(env, *ALICE).startswith("-ERR [AUTH]"), "alice's old password still works"
    note(f"passwd-file reload: append seen after {w1:.2f}s, replace after {w2:.2f}s")


def test_password_schemes_and_file_format(env_factory):
    users = {"s512": ("SHA512-CRYPT", "pw-512"), "s256": ("SHA256-CRYPT", "pw-256"), "blf": ("BLF-CRYPT", "pw-blf"),
             "plain": ("PLAIN", "pw-plain")}

    def prefill(e):
        e.passwd.header = "# comment line\n\n# another: with colons:\n\n"
        for u, (scheme, pw) in users.items():
            e.passwd.add(u, pw, scheme=scheme, extra=":1001:1001:Gecos Name:/home/x:/bin/false:userdb_quota_rule=*:storage=1G")
        e.passwd.write()

    e = env_factory(prefill=prefill)
    for u, (scheme, pw) in users.items():
        r = try_login_fresh(e, u, pw)
        assert r.startswith("+OK"), f"{scheme} user {u}: correct password got {r!r} (hash {e.passwd.entries[u]})"
    # Wrong passwords in parallel, each from its own address: failed logins are delayed.
    results: dict[str, str] = {}

    def wrong(i: int, u: str, pw: str) -> None:
        try:
            results[u] = try_login_fresh(e, u, pw + "x", source=f"127.0.0.{30 + i}")
        except Exception as ex:
            results[u] = f"exception {ex!r}"

    threads = [threading.Thread(target=wrong, args=(i, u, pw)) for i, (u, (_, pw)) in enumerate(users.items())]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    for u, (scheme, _) in users.items():
        assert results.get(u, "").startswith("-ERR [AUTH]"), f"{scheme} user {u}: wrong password got {results.get(u)!r}"


def test_idle_timeout(env_factory):
    e = env_factory(extra=["--idle-timeout", "2"])
    three(e)
    c = session(e)
    t = time.monotonic()
    data = c.expect_closed(timeout=10)
    waited = time.monotonic() - t
    assert waited >= 1.5, f"closed after {waited:.1f}s with --idle-timeout 2"
    note(f"idle timeout 2s: closed after {waited:.2f}s, last bytes {data[-80:]!r}")
    # The lock went with the session.
    c2, _ = login_within(e.host, e.port, ALICE, 30)
    assert c2.stat()[0] == 3
    c2.ok("QUIT")
    # Also before login.
    c3 = POP3Raw(e.host, e.port)
    c3.expect_closed(timeout=10)


def test_ipv6_and_two_listeners(postie, tmp_path):
    from conftest import make_passwd

    pw = make_passwd(tmp_path)
    template = str(tmp_path / "mail" / "%u")
    Maildir(Path(template.replace("%u", "alice"))).deliver(MSG1)
    p4, p6 = free_port("127.0.0.1"), free_port("::1")
    s = postie.start(passwd=pw.path, maildir=template, listen=[("127.0.0.1", p4), ("::1", p6)])
    c = POP3Raw("::1", p6)
    c.login(*ALICE)
    assert c.retr(1) == canonical_crlf(MSG1)
    c.ok("QUIT")
    c = POP3Raw("127.0.0.1", p4)
    c.login(*ALICE)
    c.ok("QUIT")
    deadline = time.monotonic() + 30
    while "rip=::1" not in s.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "rip=::1" in s.log_text(), f"no 'rip=::1' login line in the log:\n{s.log_tail()}"


def test_log_lines_and_no_secrets(env):
    msgs = three(env)
    c = session(env)
    c.retr(1)
    c.retr(2)
    c.ok("DELE 3")
    c.ok("QUIT")
    c.close()
    bad = POP3Raw(env.host, env.port)
    bad.try_login(ALICE[0], "Wr0ng-Secret-Attempt")
    bad.close()
    deadline = time.monotonic() + 30
    while "Disconnected" not in env.server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = env.server.log_text()
    assert re.search(r"Login: user=<alice>, method=USER, rip=127\.0\.0\.1", log), f"no Login line:\n{log}"
    m = re.search(r"Disconnected: Logged out top=(\d+)/(\d+), retr=(\d+)/(\d+), del=(\d+)/(\d+), size=(\d+)", log)
    assert m, f"no 'Disconnected: Logged out top=.., retr=.., del=.., size=..' line:\n{log}"
    assert m.group(3) == "2" and m.group(5) == "1", f"expected retr=2/… del=1/…, got {m.group(0)!r}"
    for secret in (ALICE[1], BOB[1], "Wr0ng-Secret-Attempt"):
        assert secret not in log, f"a password ({secret!r}) appears in the server log"


def test_restart_on_the_same_port(env):
    three(env)
    for _ in range(3):
        c = session(env)
        c.retr(1)
        c.ok("QUIT")
        c.close()
    env.server.stop()
    env.restart(same_port=True)
    c = session(env)
    assert c.stat()[0] == 3
    c.ok("QUIT")


def test_sigterm_with_open_sessions_exits_promptly(env):
    three(env)
    c = session(env)
    idle = POP3Raw(env.host, env.port)
    t = time.monotonic()
    rc = env.server.stop(timeout=10)
    took = time.monotonic() - t
    assert not env.server.notes, f"server ignored SIGTERM for 10s with two open connections"
    assert rc == 0, f"exit status {rc} after SIGTERM (expected a clean 0)"
    note(f"SIGTERM with open sessions: exited {rc} after {took:.2f}s")


def test_demo(postie, tmp_path):
    port = free_port()
    p = postie.start(passwd=None, maildir=None, listen=[("127.0.0.1", port)], extra=["--demo"], name="demo",
                     ready_timeout=10)
    try:
        r = subprocess.run(["curl", "-sS", "--max-time", "30", f"pop3://127.0.0.1:{port}/", "-u", "demo:demo"],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, f"curl LIST on the demo: exit {r.returncode} {r.stderr!r}"
        listing = [l for l in r.stdout.decode().split("\r\n") if l]
        assert listing, "the demo mailbox is empty"
        for line in listing:
            n = line.split()[0]
            r = subprocess.run(["curl", "-sS", "--max-time", "30", f"pop3://127.0.0.1:{port}/{n}", "-u", "demo:demo"],
                               capture_output=True, timeout=60)
            assert r.returncode == 0 and b":" in r.stdout, f"curl RETR {n} on the demo: {r}"
            assert len(r.stdout) == int(line.split()[1]), f"demo message {n}: LIST {line!r}, got {len(r.stdout)} octets"
        out = p.output()
        assert str(port) in out or "demo" in out, f"the demo did not say how to connect: {out!r}"
    finally:
        p.stop()
