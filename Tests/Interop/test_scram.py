"""SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802, 7677) with scramp's client: the server signature,
poplib, wrong password and unknown user alike, malformed messages, saslname escaping, the
salt, throttling per account, and SCRAM where plaintext passwords are refused.

Needs the PyPI package `scramp`; missing, it is a failure, never a skip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import poplib
import re
import time

import pytest

from kits.authenv import (
    ALL_MECHS,
    assert_alive,
    assert_auth_error,
    assert_logged_in,
    message_for,
    serve,
)
from kits.launcher import HOST
from kits.mail import ALICE, BOB, canonical_crlf
from kits.sasl import SERVER_FIRST_RX, b64d, b64e, need_scramp, scram_login, scramp


# --------------------------------------------------------------------------
# 2. SCRAM-SHA-256 / SCRAM-SHA-1 with scramp
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_login_verifies_server_signature(postie, tmp_path, mech):
    need_scramp()
    srv = serve(postie, tmp_path)
    for initial in (True, False):
        with srv.conn() as c:
            res = scram_login(c, mech, BOB[0], BOB[1], initial=initial)
            assert res.server_first and SERVER_FIRST_RX.match(res.server_first), f"server-first {res.server_first!r}"
            assert res.server_final and res.server_final.startswith("v="), f"server-final {res.server_final!r}"
            assert_logged_in(c, res.reply, BOB[0], f"{mech} initial={initial}: steps {res.steps}")
            assert c.quit().startswith("+OK")
    srv.wait_log(rf"Login: user=<bob>, method={mech}, ", count=2)
    # A tampered server signature would be caught by scramp (negative control for the check above).
    client = scramp.ScramClient([mech], BOB[0], BOB[1])
    with srv.conn() as c:
        r = c.cmd(f"AUTH {mech} {b64e(client.get_client_first())}")
        client.set_server_first(b64d(r[2:]).decode())
        r = c.cmd(b64e(client.get_client_final()))
        final = b64d(r[2:]).decode()
        forged = "v=" + b64e(bytes(len(b64d(final[2:]))))
        with pytest.raises(scramp.ScramException):
            client.set_server_final(forged)
        c.cmd("*")


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_over_poplib_shortcmd(postie, tmp_path, mech):
    need_scramp()
    srv = serve(postie, tmp_path)
    p = poplib.POP3(HOST, srv.port, timeout=15)
    try:
        client = scramp.ScramClient([mech], BOB[0], BOB[1])
        r = p._shortcmd(f"AUTH {mech} {b64e(client.get_client_first())}")
        assert r.startswith(b"+ "), r
        client.set_server_first(b64d(r[2:].decode()).decode())
        r = p._shortcmd(b64e(client.get_client_final()))
        assert r.startswith(b"+ "), r
        client.set_server_final(b64d(r[2:].decode()).decode())
        r = p._shortcmd("")
        assert r.startswith(b"+OK"), r
        count, _ = p.stat()
        assert count == 1
        _, lines, _ = p.retr(1)
        assert b"".join(l + b"\r\n" for l in lines) == canonical_crlf(message_for(BOB[0]))
        assert p.quit().startswith(b"+OK")
    finally:
        p.close()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_wrong_password_and_unknown_user_fail_identically(postie, tmp_path, mech):
    need_scramp()
    srv = serve(postie, tmp_path)
    results = {}
    for label, user, pw in (("wrong password", BOB[0], "not-the-password"),
                            ("unknown user", "nosuchuser", "whatever"),
                            ("unknown user again", "nosuchuser", "whatever"),
                            ("crypt-only user", ALICE[0], ALICE[1])):
        with srv.conn() as c:
            res = scram_login(c, mech, user, pw)
            assert_auth_error(res.reply, f"{mech} {label}")
            assert res.server_first is not None, f"{mech} {label}: refused before server-first: {res.steps}"
            assert res.server_final is None, f"{mech} {label}: server sent a final message: {res.server_final!r}"
            m = SERVER_FIRST_RX.match(res.server_first)
            assert m, f"{mech} {label}: server-first {res.server_first!r}"
            results[label] = (res.reply, len(b64d(m.group(2))), m.group(3), m.group(2))
            assert_alive(c, f"{mech} {label}")
            # The session goes on: the right password works on the same connection.
            assert_logged_in(c, c.login(*BOB), BOB[0], f"USER/PASS after a failed {mech}")
    replies = {k: v[0] for k, v in results.items()}
    assert len(set(replies.values())) == 1, f"failure replies differ (user enumeration): {replies}"
    shapes = {k: v[1:3] for k, v in results.items()}
    assert len(set(shapes.values())) == 1, f"server-first salt length / iterations differ: {shapes}"
    # A fake salt that changed on every attempt would reveal that the user does not exist.
    assert results["unknown user"][3] == results["unknown user again"][3], "unknown user's salt is not stable"
    srv.wait_log(rf"Login failed: user=<bob>, method={mech}, .*reason=auth failed")
    srv.wait_log(rf"Login failed: user=<alice>, method={mech}, .*reason=auth failed")


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_malformed_messages_are_refused(postie, tmp_path, mech):
    need_scramp()
    srv = serve(postie, tmp_path)
    bad_firsts = {
        "not SCRAM at all": "hello",
        "channel binding demanded": "p=tls-unique,,n=bob,r=abcdefgh",
        "no nonce": "n,,n=bob",
        "no user": "n,,r=abcdefgh",
        "mandatory extension": "n,,m=ext,n=bob,r=abcdefgh",
        "bad gs2 flag": "x,,n=bob,r=abcdefgh",
    }
    for label, first in bad_firsts.items():
        with srv.conn() as c:
            r = c.cmd(f"AUTH {mech} {b64e(first)}")
            assert_auth_error(r, f"{mech} client-first {label} ({first!r})")
            assert_alive(c, f"{mech} after malformed client-first ({label})")
    # Client-final messages that do not match the exchange.
    for label in ("wrong nonce", "wrong channel binding", "no proof"):
        with srv.conn() as c:
            client = scramp.ScramClient([mech], BOB[0], BOB[1])
            r = c.cmd(f"AUTH {mech} {b64e(client.get_client_first())}")
            assert r.startswith("+ "), r
            client.set_server_first(b64d(r[2:]).decode())
            final = client.get_client_final()
            if label == "wrong nonce":
                final = re.sub(r"r=([^,]+)", lambda m: "r=" + m.group(1)[:-1] + ("A" if m.group(1)[-1] != "A" else "B"), final)
            elif label == "wrong channel binding":
                final = final.replace("c=biws", "c=eSws")  # "y,,"
            else:
                final = final.split(",p=")[0]
            r = c.cmd(b64e(final))
            assert_auth_error(r, f"{mech} client-final with {label}")
            assert_alive(c, f"{mech} after client-final with {label}")
    # A non-empty answer to the server-final challenge is a protocol error too.
    with srv.conn() as c:
        client = scramp.ScramClient([mech], BOB[0], BOB[1])
        r = c.cmd(f"AUTH {mech} {b64e(client.get_client_first())}")
        client.set_server_first(b64d(r[2:]).decode())
        r = c.cmd(b64e(client.get_client_final()))
        assert r.startswith("+ "), r
        client.set_server_final(b64d(r[2:]).decode())
        r = c.cmd(b64e("unexpected"))
        assert r.startswith("-ERR"), f"{mech}: non-empty answer to server-final got {r!r}"


def test_scram_saslname_escaping(postie, tmp_path):
    """RFC 5802 section 5.1: ',' and '=' in the user name travel as =2C and =3D."""
    need_scramp()
    srv = serve(postie, tmp_path, users={"o=k,x": ("comma-pw", "PLAIN")})
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        with srv.conn() as c:
            res = scram_login(c, mech, "o=k,x", "comma-pw")
            assert_logged_in(c, res.reply, "o=k,x", f"{mech} with ',' and '=' in the user name")


def test_scram_salt_is_per_user_and_reveals_nothing(postie, tmp_path):
    """Anyone may send a client-first and read the salt, before proving anything (RFC 5802
    section 5).  Two users with the same password must not get the same salt: a salt that is a
    function of the password alone is an unsalted, fast hash of it, handed to every client,
    which skips the iterated Hi() that SCRAM relies on (RFC 5802 section 9)."""
    need_scramp()
    same = "shared-Password-1"
    srv = serve(postie, tmp_path, users={"twin1": (same, "PLAIN"), "twin2": (same, "PLAIN")})
    for mech, h in (("SCRAM-SHA-256", "sha256"), ("SCRAM-SHA-1", "sha1")):
        salts = {}
        for user in ("twin1", "twin2"):
            with srv.conn() as c:
                client = scramp.ScramClient([mech], user, same)
                r = c.cmd(f"AUTH {mech} {b64e(client.get_client_first())}")
                assert r.startswith("+ "), r
                m = SERVER_FIRST_RX.match(b64d(r[2:]).decode())
                salts[user] = m.group(2)
                c.cmd("*")
        leak = base64.b64encode(hashlib.new(h, b"postie-scram-salt" + same.encode()).digest()[:16]).decode()
        why = (f" (the salt is {h}('postie-scram-salt' + password)[:16]: an offline oracle for the password)"
               if salts["twin1"] == leak else "")
        assert salts["twin1"] != salts["twin2"], f"{mech}: users with the same password get the same salt {salts}{why}"


def test_failed_sasl_logins_name_the_user_and_throttle_per_account(postie, tmp_path):
    """A failed SCRAM or CRAM-MD5 login is logged with the user it tried and throttled on that
    account, like USER/PASS (docs/configuration.md: the delay doubles per address or per account)."""
    need_scramp()
    srv = serve(postie, tmp_path, args=["--auth-mechanisms", ALL_MECHS],
                config={"auth_failure_delay": 2, "auth_failure_max_delay": 16})

    def timed(fn) -> tuple[str, float]:
        t = time.monotonic()
        r = fn()
        return r, time.monotonic() - t

    def scram_fail(c, user):
        client = scramp.ScramClient(["SCRAM-SHA-256"], user, "bad-password")
        r = c.cmd(f"AUTH SCRAM-SHA-256 {b64e(client.get_client_first())}")
        client.set_server_first(b64d(r[2:]).decode())
        return timed(lambda: c.cmd(b64e(client.get_client_final())))

    def cram_fail(c, user):
        r = c.cmd("AUTH CRAM-MD5")
        challenge = b64d(r[2:])
        digest = hmac.new(b"bad-password", challenge, "md5").hexdigest()
        return timed(lambda: c.cmd(b64e(f"{user} {digest}")))

    def pass_fail(c, user):
        c.ok(f"USER {user}")
        return timed(lambda: c.cmd("PASS bad-password"))

    problems = []
    n = 30
    for label, fail in (("USER/PASS", pass_fail), ("SCRAM-SHA-256", scram_fail), ("CRAM-MD5", cram_fail)):
        delays = []
        # A different account in each row: failures on one account add up across addresses.
        second = {"USER/PASS": ALICE[0], "SCRAM-SHA-256": BOB[0], "CRAM-MD5": f"ghost2-{label}"}[label]
        for user in (f"ghost-{label}", second):
            n += 1
            with srv.conn(source=f"127.0.0.{n}") as c:
                r, dt = fail(c, user)
                assert_auth_error(r, f"{label} failure for {user}")
                delays.append(round(dt, 2))
        # Different address, different account, no earlier failures: the first delay step (2 s)
        # both times; a shared bucket would double it to 4 s. Relative to the first, so that a
        # machine slow for both does not count.
        if delays[1] > max(3.0, 1.5 * delays[0]):
            problems.append(f"{label}: a first failure on a fresh address and account waited {delays[1]} s "
                            f"(after {delays[0]} s for another account): failures share one throttle bucket")
    # Logged under the normalised name (auth_username_format %Lu, docs/users.md).
    for method, user in (("SCRAM-SHA-256", "ghost-scram-sha-256"), ("CRAM-MD5", "ghost-cram-md5")):
        if not srv.log_lines(rf"Login failed: user=<{re.escape(user)}>, method={method}, "):
            got = srv.log_lines(rf"Login failed: .*method={method}, ")
            problems.append(f"{method}: failed login of unknown user {user} logged as {got[:1]}")
    assert not problems, "\n".join(problems)


def test_scram_works_where_plaintext_passwords_are_refused(postie, tmp_path):
    """SCRAM does not reveal the password, so it stays usable on an untrusted plaintext connection."""
    need_scramp()
    srv = serve(postie, tmp_path, args=["--trusted-network", "none"])
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        with srv.conn() as c:
            res = scram_login(c, mech, BOB[0], BOB[1])
            assert_logged_in(c, res.reply, BOB[0], f"{mech} on an untrusted connection")
