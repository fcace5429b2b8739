"""RFC 1939 / RFC 2449 edge cases over a real socket: greeting, pipelining, TOP, bad numbers and
states, RSET and DELE, identical failures, CAPA, long lines and bad commands."""

from __future__ import annotations

import re
import socket
import time

from conftest import note
from kits.mail import ALICE, BOB, canonical_crlf, corpus, CRLF
from kits.pop3 import login_within, POP3Raw, ProtocolError, snapshot
from kits.sessions import MSG1, alive, numbers_by_content, session, three, top_expected


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
