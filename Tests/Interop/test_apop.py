"""APOP (RFC 1939 section 7) with poplib: the timestamp, a wrong or malformed digest, and APOP off.
"""

from __future__ import annotations

import hashlib
import poplib
import re

import pytest

from kits.authenv import (
    assert_auth_error,
    assert_logged_in,
    message_for,
    serve,
)
from kits.launcher import HOST
from kits.mail import ALICE, BOB, canonical_crlf


# --------------------------------------------------------------------------
# 3. APOP with poplib
# --------------------------------------------------------------------------


def test_apop_with_poplib(postie, tmp_path):
    srv = serve(postie, tmp_path, args=["--apop"])
    greetings = []
    p = poplib.POP3(HOST, srv.port, timeout=15)
    try:
        greetings.append(p.getwelcome())
        assert re.match(rb"^\+OK .*<[^<>@\s]+@[^<>\s]+>$", p.getwelcome()), f"greeting {p.getwelcome()!r}"
        assert p.apop(BOB[0], BOB[1]).startswith(b"+OK")
        assert p.stat()[0] == 1
        _, lines, _ = p.retr(1)
        assert b"".join(l + b"\r\n" for l in lines) == canonical_crlf(message_for(BOB[0]))
        p.quit()
    finally:
        p.close()
    srv.wait_log(r"Login: user=<bob>, method=APOP, ")
    # Wrong password; a crypt-only user (no key for APOP); an unknown user: all -ERR [AUTH].
    for user, pw in ((BOB[0], "wrong"), (ALICE[0], ALICE[1]), ("nosuchuser", "x")):
        p = poplib.POP3(HOST, srv.port, timeout=15)
        try:
            greetings.append(p.getwelcome())
            with pytest.raises(poplib.error_proto) as e:
                p.apop(user, pw)
            assert_auth_error(e.value.args[0].decode(), f"APOP {user}")
            assert p.capa(), "the session survives a failed APOP"
            assert p.user(BOB[0]).startswith(b"+OK") and p.pass_(BOB[1]).startswith(b"+OK")
            p.quit()
        finally:
            p.close()
    srv.wait_log(r"Login failed: user=<alice>, method=APOP, .*reason=auth failed")
    # RFC 1939 section 7: the timestamp must differ in every greeting.
    stamps = [re.search(rb"<.*>", g).group(0) for g in greetings]
    assert len(set(stamps)) == len(stamps), f"APOP timestamps repeat: {stamps}"


def test_apop_digest_wrong_and_malformed(postie, tmp_path):
    srv = serve(postie, tmp_path, args=["--apop"])
    with srv.conn() as c:
        stamp = re.search(r"<.*>", c.greeting.decode()).group(0)
        good = hashlib.md5((stamp + BOB[1]).encode()).hexdigest()
        other = hashlib.md5((stamp + "x" + BOB[1]).encode()).hexdigest()
        assert_auth_error(c.cmd(f"APOP {BOB[0]} {other}"), "APOP with a wrong digest")
        r = c.cmd(f"APOP {BOB[0]} nothex")
        assert r.startswith("-ERR"), f"APOP with a malformed digest: {r!r}"
        assert_logged_in(c, c.cmd(f"APOP {BOB[0]} {good}"), BOB[0], "APOP after failures")


def test_apop_refused_when_off(postie, tmp_path):
    srv = serve(postie, tmp_path)
    p = poplib.POP3(HOST, srv.port, timeout=15)
    try:
        assert b"<" not in p.getwelcome(), f"greeting carries an APOP timestamp with APOP off: {p.getwelcome()!r}"
        with pytest.raises(poplib.error_proto):  # poplib refuses itself: no timestamp
            p.apop(BOB[0], BOB[1])
        digest = hashlib.md5(b"<1.2@x>" + BOB[1].encode()).hexdigest()
        with pytest.raises(poplib.error_proto) as e:
            p._shortcmd(f"APOP {BOB[0]} {digest}")
        assert e.value.args[0].startswith(b"-ERR"), e.value.args
        assert p.capa(), "the session survives APOP when it is off"
    finally:
        p.close()
    assert not srv.log_lines(r"Login: .*method=APOP"), "APOP logged in although it is off"
