"""SASL AUTH (RFC 5034): curl with AUTH=PLAIN, LOGIN and CRAM-MD5, the mechanism list and its
order, cancel and continuations, bad Base64, PLAIN's authzid, CAPA SASL under the plaintext
policy and after STLS, UTF-8 users (RFC 6856) and stored SCRAM/CRAM keys.

Clients: curl and the raw client (kits/pop3.py, kits/sasl.py).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess

import pytest

from kits.authenv import (
    ALL_MECHS,
    DEFAULT_MECHS,
    FAST,
    JOERG,
    ZOE,
    assert_alive,
    assert_auth_error,
    assert_logged_in,
    message_for,
    serve,
    write_yaml,
)
from kits.launcher import HOST, free_port
from kits.mail import ALICE, BOB, canonical_crlf
from kits.pop3 import POP3Raw
from kits.sasl import b64d, b64e, need_scramp, sasl_list, sasl_plain, scram_login, scramp
from kits.tls import client_context, start_tls_server
from kits.tools import curl, run_postie


# --------------------------------------------------------------------------
# 1. curl: AUTH=PLAIN, LOGIN, CRAM-MD5
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_curl_logs_in_with_sasl_mechanism_and_downloads(postie, tmp_path, mech):
    srv = serve(postie, tmp_path, args=["--auth-mechanisms", ALL_MECHS])
    base = f"pop3://{HOST}:{srv.port}/1"
    want = canonical_crlf(message_for(BOB[0]))
    # curl sends the initial response (RFC 4954-style SASL-IR) only with --sasl-ir; try both.
    for ir in ([], ["--sasl-ir"]):
        r = curl([base, "-u", f"{BOB[0]}:{BOB[1]}", "--login-options", f"AUTH={mech}"] + ir)
        assert r.returncode == 0, f"curl AUTH={mech} {ir}: exit {r.returncode}: {r.stderr.decode(errors='replace')}"
        assert r.stdout == want, f"curl AUTH={mech} {ir}: downloaded {r.stdout[:200]!r}, want {want[:200]!r}"
    lines = srv.wait_log(rf"pop3-login: Info: Login: user=<bob>, method={re.escape(mech)}, rip=127\.0\.0\.1", count=2)
    assert len(lines) == 2, lines
    # curl really used the mechanism: no USER/PASS or other method logged.
    others = srv.log_lines(r"Login: user=<bob>, method=(?!" + re.escape(mech) + r",)")
    assert not others, f"curl with AUTH={mech} logged in another way: {others}"


def test_curl_cram_md5_needs_a_plain_password(postie, tmp_path):
    """CRAM-MD5 cannot use a crypt hash (alice is SHA512-CRYPT): it fails like a wrong password."""
    srv = serve(postie, tmp_path, args=["--auth-mechanisms", ALL_MECHS])
    base = f"pop3://{HOST}:{srv.port}/1"
    r = curl([base, "-u", f"{ALICE[0]}:{ALICE[1]}", "--login-options", "AUTH=CRAM-MD5"])
    assert r.returncode == 67, f"curl CRAM-MD5 for a crypt user: exit {r.returncode} (want 67, login denied)"
    srv.wait_log(r"Login failed: user=<alice>, method=CRAM-MD5, .*reason=auth failed")
    r = curl([base, "-u", f"{BOB[0]}:wrong-password", "--login-options", "AUTH=CRAM-MD5"])
    assert r.returncode == 67, f"curl CRAM-MD5 wrong password: exit {r.returncode}"
    srv.wait_log(r"Login failed: user=<bob>, method=CRAM-MD5, .*reason=auth failed")


def test_cram_md5_is_off_unless_named(postie, tmp_path):
    srv = serve(postie, tmp_path)
    with srv.conn() as c:
        caps = c.capa()
        assert sasl_list(caps) == DEFAULT_MECHS, f"default SASL list: {caps}"
        r = c.cmd("AUTH CRAM-MD5")
        assert r.startswith("-ERR"), f"AUTH CRAM-MD5 when not enabled: {r!r}"
        assert_alive(c, "after refused AUTH CRAM-MD5")
    r = curl([f"pop3://{HOST}:{srv.port}/1", "-u", f"{BOB[0]}:{BOB[1]}", "--login-options", "AUTH=CRAM-MD5"])
    assert r.returncode != 0, "curl AUTH=CRAM-MD5 logged in although CRAM-MD5 is not enabled"


def test_auth_mechanisms_option_restricts_and_orders(postie, tmp_path):
    srv = serve(postie, tmp_path, args=["--auth-mechanisms", "scram-sha-1,cram-md5, PLAIN"])
    with srv.conn() as c:
        assert sasl_list(c.capa()) == ["SCRAM-SHA-1", "CRAM-MD5", "PLAIN"]
        r = c.cmd("AUTH LOGIN")
        assert r.startswith("-ERR"), f"AUTH LOGIN not in --auth-mechanisms: {r!r}"
        r = c.cmd("AUTH SCRAM-SHA-256")
        assert r.startswith("-ERR"), f"AUTH SCRAM-SHA-256 not in --auth-mechanisms: {r!r}"
        # USER/PASS is not a SASL mechanism and stays available.
        assert_logged_in(c, c.login(*BOB), BOB[0], "USER/PASS with a restricted SASL list")


def test_auth_mechanisms_unknown_name_is_a_startup_error(postie_bin, tmp_path):
    (tmp_path / "passwd").write_text("bob:{PLAIN}x\n")
    r = run_postie(postie_bin, ["serve", "--listen", f"{HOST}:{free_port()}", "--passwd-file", str(tmp_path / "passwd"),
                                "--maildir", str(tmp_path / "%u"), "--auth-mechanisms", "PLAIN DIGEST-MD5"], timeout=20)
    assert r.returncode != 0 and b"DIGEST-MD5" in r.stderr, f"exit {r.returncode}: {r.stderr!r}"


# --------------------------------------------------------------------------
# 7. SASL edge cases, plaintext policy, STLS, UTF-8
# --------------------------------------------------------------------------


def test_sasl_cancel_and_continuations(postie, tmp_path):
    srv = serve(postie, tmp_path)
    with srv.conn() as c:
        for mech in ("PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"):
            r = c.cmd(f"AUTH {mech}")
            assert r.startswith("+ "), f"AUTH {mech}: {r!r}"
            r = c.cmd("*")
            assert_auth_error(r, f"AUTH {mech} cancelled with *")
        # LOGIN mid-exchange: cancel after the user name.
        assert c.cmd("AUTH LOGIN") == "+ " + b64e("Username:")
        assert c.cmd(b64e(BOB[0])) == "+ " + b64e("Password:")
        assert_auth_error(c.cmd("*"), "AUTH LOGIN cancelled at the password")
        # The session survives and a full continuation exchange works.
        assert_alive(c, "after cancels")
        assert c.cmd("AUTH LOGIN") == "+ " + b64e("Username:")
        assert c.cmd(b64e(BOB[0])) == "+ " + b64e("Password:")
        assert_logged_in(c, c.cmd(b64e(BOB[1])), BOB[0], "AUTH LOGIN with continuations")
    with srv.conn() as c:
        assert_logged_in(c, sasl_plain(c, *BOB, initial=False), BOB[0], "AUTH PLAIN with a continuation")
        r = c.cmd(f"AUTH PLAIN {b64e(chr(0) + BOB[0] + chr(0) + BOB[1])}")
        assert r.startswith("-ERR"), f"AUTH after login: {r!r}"
    srv.wait_log(r"Login: user=<bob>, method=LOGIN, ")
    srv.wait_log(r"Login: user=<bob>, method=PLAIN, ")


def test_sasl_bad_base64(postie, tmp_path):
    srv = serve(postie, tmp_path)
    with srv.conn() as c:
        assert_auth_error(c.cmd("AUTH PLAIN !!!notbase64"), "bad base64 initial response")
        assert_alive(c, "after bad base64 initial response")
        assert c.cmd("AUTH PLAIN") == "+ "
        assert_auth_error(c.cmd("%%%%"), "bad base64 continuation")
        assert_alive(c, "after bad base64 continuation")
        # The tenth bad command before login ends the session (Dovecot's pop3-login limit,
        # docs/configuration.md); the third to ninth only get -ERR.
        for n in range(3, 10):
            r = c.cmd("AUTH PLAIN abc")  # length not a multiple of 4
            assert r.startswith("-ERR"), f"bad command {n}: {r}"
        assert_alive(c, "after nine bad commands")
        r = c.cmd("AUTH PLAIN abc")
        assert r.startswith("-ERR"), r
        c.expect_closed()
    with srv.conn() as c:
        assert_auth_error(c.cmd("AUTH LOGIN ===="), "bad base64 LOGIN initial response")
        assert_logged_in(c, sasl_plain(c, *BOB), BOB[0], "PLAIN after one bad base64")
    with srv.conn() as c:
        r = c.cmd("AUTH PLAIN =")  # empty initial response (RFC 5034): not a valid PLAIN message
        assert_auth_error(r, "AUTH PLAIN =")
        r = c.cmd("AUTH NO-SUCH-MECH")
        assert r.startswith("-ERR"), r
        assert_alive(c, "after unknown mechanism")


def test_sasl_plain_authzid(postie, tmp_path):
    srv = serve(postie, tmp_path)
    with srv.conn() as c:
        assert_auth_error(sasl_plain(c, *BOB, authzid=ALICE[0]), "PLAIN with authzid alice for bob")
        assert_auth_error(sasl_plain(c, BOB[0], "wrong"), "PLAIN wrong password")
        assert_auth_error(sasl_plain(c, "nosuchuser", "x"), "PLAIN unknown user")
        assert_logged_in(c, sasl_plain(c, *BOB, authzid=BOB[0]), BOB[0], "PLAIN with authzid = authcid")
    srv.wait_log(r"Login failed: user=<bob>, method=PLAIN, .*reason=auth failed", count=1)
    assert not srv.log_lines(r"Login: user=<alice>"), "authzid alice logged in as alice"


def test_bare_auth_lists_mechanisms(postie, tmp_path):
    srv = serve(postie, tmp_path, args=["--auth-mechanisms", ALL_MECHS])
    with srv.conn() as c:
        want = sasl_list(c.capa())
        assert want == ALL_MECHS.split()
        for line in ("AUTH", "AUTH "):
            r, lines = c.multi(line)
            assert r.startswith("+OK"), f"{line!r}: {r!r}"
            assert [l.decode() for l in lines] == want, f"{line!r} lists {lines}, CAPA SASL {want}"
        assert_logged_in(c, sasl_plain(c, *BOB), BOB[0], "login after bare AUTH")


def test_capa_sasl_follows_plaintext_policy(postie, tmp_path):
    trusted = serve(postie, tmp_path, name="trusted")
    untrusted = serve(postie, tmp_path, args=["--trusted-network", "none"], name="untrusted")
    with trusted.conn() as c:
        caps = c.capa()
        assert sasl_list(caps) == DEFAULT_MECHS and "USER" in caps, caps
    with untrusted.conn() as c:
        caps = c.capa()
        assert sasl_list(caps) == ["SCRAM-SHA-256", "SCRAM-SHA-1"], f"untrusted, no TLS: {caps}"
        assert "USER" not in caps, caps
        r, lines = c.multi("AUTH")
        assert [l.decode() for l in lines] == ["SCRAM-SHA-256", "SCRAM-SHA-1"], f"bare AUTH: {lines}"
        assert_auth_error(sasl_plain(c, *BOB), "AUTH PLAIN on an untrusted plaintext connection")
        assert_auth_error(c.cmd("AUTH LOGIN"), "AUTH LOGIN on an untrusted plaintext connection")
    assert not untrusted.log_lines(r"Login: user=<bob>, method=(PLAIN|LOGIN)")


def test_auth_plain_after_stls(postie, tmp_path, pki):
    cfg = "\n".join(f"{k}: {v}" for k, v in FAST.items()) + "\n"
    srv = start_tls_server(postie, tmp_path, pki, implicit=True, extra=["--trusted-network", "none"], config=cfg)
    ctx = client_context(pki.cafile)
    with POP3Raw(HOST, srv.plain) as c:
        caps = c.capa()
        assert sasl_list(caps) == ["SCRAM-SHA-256", "SCRAM-SHA-1"] and "STLS" in caps, caps
        assert_auth_error(sasl_plain(c, *BOB), "AUTH PLAIN before STLS")
        c.ok("STLS")
        c.starttls(ctx)
        caps = c.capa()
        assert sasl_list(caps) == DEFAULT_MECHS and "USER" in caps and "STLS" not in caps, f"after STLS: {caps}"
        r = sasl_plain(c, *BOB)
        assert r.startswith("+OK"), f"AUTH PLAIN after STLS: {r!r}"
        c.ok("STAT")
    srv.server.wait_log(r"Login: user=<bob>, method=PLAIN, rip=127\.0\.0\.1, lip=127\.0\.0\.1, TLS, ")
    # LOGIN with continuations over implicit TLS.
    with POP3Raw(HOST, srv.tls, tls=ctx) as c:
        assert sasl_list(c.capa()) == DEFAULT_MECHS
        assert c.cmd("AUTH LOGIN") == "+ " + b64e("Username:")
        assert c.cmd(b64e(ALICE[0])) == "+ " + b64e("Password:")
        r = c.cmd(b64e(ALICE[1]))
        assert r.startswith("+OK"), f"AUTH LOGIN over implicit TLS: {r!r}"
    srv.server.wait_log(r"Login: user=<alice>, method=LOGIN, .*TLS, ")


def test_utf8_users(postie, tmp_path):
    need_scramp()
    srv = serve(postie, tmp_path, users={JOERG[0]: (JOERG[1], "PLAIN"), ZOE[0]: (ZOE[1], "SHA512-CRYPT")},
                args=["--apop"])
    with srv.conn() as c:
        caps = c.capa()
        assert "UTF8 USER" in caps, caps
        r = c.cmd("UTF8")
        assert r.startswith("+OK"), f"UTF8: {r!r}"
        assert_logged_in(c, c.login(*JOERG), JOERG[0], "UTF-8 USER/PASS after UTF8")
        r = c.cmd("UTF8")
        assert r.startswith("-ERR"), f"UTF8 in TRANSACTION state: {r!r}"
    with srv.conn() as c:
        assert_logged_in(c, c.login(*ZOE), ZOE[0], "UTF-8 USER/PASS (crypt) without UTF8 command")
    for user, pw in (JOERG, ZOE):
        with srv.conn() as c:
            assert_logged_in(c, sasl_plain(c, user, pw), user, f"SASL PLAIN as {user}")
        with srv.conn() as c:
            assert_auth_error(sasl_plain(c, user, pw + "!"), f"SASL PLAIN as {user}, wrong password")
    with srv.conn() as c:
        stamp = re.search(r"<.*>", c.greeting.decode()).group(0)
        digest = hashlib.md5((stamp + JOERG[1]).encode("utf-8")).hexdigest()
        assert_logged_in(c, c.cmd(f"APOP {JOERG[0]} {digest}"), JOERG[0], "APOP with UTF-8 user and password")
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        with srv.conn() as c:
            res = scram_login(c, mech, *JOERG)
            assert_logged_in(c, res.reply, JOERG[0], f"{mech} with UTF-8 user and password")
    for method in ("USER", "PLAIN", "APOP", "SCRAM-SHA-256"):
        srv.wait_log(rf"Login: user=<{JOERG[0]}>, method={method}, ")
    srv.wait_log(rf"Login: user=<{ZOE[0]}>, method=PLAIN, ")


def test_capa_sasl_with_require_tls(postie, tmp_path, pki):
    """With --require-tls nothing but CAPA, STLS and QUIT works before TLS, so CAPA must not
    offer a SASL mechanism there (RFC 2449 section 5: CAPA lists what the server supports in
    the current state); after STLS every mechanism is offered and works."""
    need_scramp()
    cfg = "\n".join(f"{k}: {v}" for k, v in FAST.items()) + "\n"
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, extra=["--require-tls"], config=cfg)
    ctx = client_context(pki.cafile)
    with POP3Raw(HOST, srv.plain) as c:
        caps = c.capa()
    offered = sasl_list(caps) or []
    refused = {}
    for mech in offered:  # one connection each: every refusal counts as a bad command
        with POP3Raw(HOST, srv.plain) as c:
            r = c.cmd(f"AUTH {mech}")
            if not r.startswith("+ "):
                refused[f"AUTH {mech}"] = r
    if "UTF8 USER" in caps:
        with POP3Raw(HOST, srv.plain) as c:
            r = c.cmd("UTF8")
            if not r.startswith("+OK"):
                refused["UTF8"] = r
    assert not refused, f"CAPA before TLS lists {caps}, but these are refused: {refused}"
    with POP3Raw(HOST, srv.plain) as c:
        c.ok("STLS")
        c.starttls(ctx)
        assert sasl_list(c.capa()) == DEFAULT_MECHS
        client = scramp.ScramClient(["SCRAM-SHA-256"], *BOB)
        r = c.cmd(f"AUTH SCRAM-SHA-256 {b64e(client.get_client_first())}")
        client.set_server_first(b64d(r[2:]).decode())
        r = c.cmd(b64e(client.get_client_final()))
        client.set_server_final(b64d(r[2:]).decode())
        assert c.cmd("").startswith("+OK")


def test_stored_scram_and_cram_keys_serve_their_mechanisms_without_plaintext(postie, tmp_path):
    """{SCRAM-SHA-256} and {CRAM-MD5} entries made by doveadm log in with their mechanisms
    (the server never sees the password); an entry without SHA-1 keys fails SCRAM-SHA-1."""
    need_scramp()
    password = "pass word ü"
    lines = []
    for user, scheme in (("scram", "SCRAM-SHA-256"), ("cram", "CRAM-MD5")):
        r = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", password], capture_output=True, timeout=30)
        assert r.returncode == 0, f"doveadm pw -s {scheme}: {r.stderr!r}"
        lines.append(f"{user}:{r.stdout.decode().strip()}")
    d = tmp_path / "stored"
    d.mkdir()
    (d / "passwd").write_text("\n".join(lines) + "\n")
    template = str(d / "mail" / "%u")
    cfg = write_yaml(d / "postie.yaml", FAST)
    s = postie.start(passwd=d / "passwd", maildir=template, name="stored",
                     extra=["--config", str(cfg), "--auth-mechanisms", "SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5"])
    c = POP3Raw(s.host, s.port)
    assert scram_login(c, "SCRAM-SHA-256", "scram", password).reply.startswith("+OK"), s.log_tail()
    c.cmd("QUIT")
    c = POP3Raw(s.host, s.port)
    res = scram_login(c, "SCRAM-SHA-1", "scram", password)
    assert res.reply.startswith("-ERR [AUTH]"), res.steps
    c.cmd("QUIT")
    c = POP3Raw(s.host, s.port)
    r = c.cmd("AUTH CRAM-MD5")
    challenge = b64d(r[2:])
    digest = hmac.new(password.encode(), challenge, "md5").hexdigest()
    assert c.cmd(b64e(f"cram {digest}")).startswith("+OK"), s.log_tail()
    c.cmd("QUIT")
    assert "method=SCRAM-SHA-256" in s.log_text() and "method=CRAM-MD5" in s.log_text()
