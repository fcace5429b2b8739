"""Plaintext-login rules (RFC 2595 section 2.1 / Dovecot's disable_plaintext_auth): trusted
networks, `none`, CIDRs, and --require-tls refusing everything but CAPA, STLS and QUIT.
"""

from __future__ import annotations


from kits.launcher import HOST
from kits.mail import ALICE, BOB, canonical_crlf, Maildir
from kits.pop3 import POP3Raw
from kits.tls import (
    client_context,
    start_tls_server,
)
from kits.tools import curl

PLAINTEXT_REFUSED = "-ERR [AUTH] Plaintext authentication disallowed"


# --------------------------------------------------------------------------
# 4. Plaintext login policy
# --------------------------------------------------------------------------


def test_trusted_network_none_refuses_plaintext_login_until_stls(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, extra=["--trusted-network", "none"])
    msg = b"From: x@example.org\nSubject: policy\n\nhello\n"
    Maildir(srv.maildir_path("alice")).create().deliver(msg)
    ctx = client_context(pki.cafile)
    with POP3Raw(HOST, srv.plain) as c:
        caps = c.capa()
        assert "USER" not in caps and "STLS" in caps, f"CAPA on an untrusted plaintext connection: {caps}"
        r = c.cmd(f"USER {ALICE[0]}")
        assert r.startswith(PLAINTEXT_REFUSED), f"USER in plaintext got {r!r}"
        r = c.cmd(f"PASS {ALICE[1]}")
        assert r.startswith(PLAINTEXT_REFUSED), f"PASS in plaintext got {r!r}"
        # The same connection upgrades and then logs in.
        c.ok("STLS")
        c.starttls(ctx)
        caps = c.capa()
        assert "USER" in caps and "STLS" not in caps, f"CAPA after STLS: {caps}"
        c.login(*ALICE)
        assert c.retr(1) == canonical_crlf(msg)
        c.ok("QUIT")
    # The refused plaintext password was never checked (no Login failed line, no penalty).
    assert not srv.server.log_lines(r"Login failed"), "a password sent in plaintext was checked"
    with POP3Raw(HOST, srv.tls, tls=ctx) as c:
        assert "USER" in c.capa()
        c.login(*ALICE)
        c.ok("QUIT")
    # Real clients: curl without TLS is refused; with --ssl-reqd (STLS) it works.
    r = curl([f"pop3://127.0.0.1:{srv.plain}/1", "-u", f"{ALICE[0]}:{ALICE[1]}"], timeout=20)
    assert r.returncode != 0, f"curl logged in over plaintext with --trusted-network none: {r.stdout[:200]!r}"
    r = curl([f"pop3://127.0.0.1:{srv.plain}/1", "-u", f"{ALICE[0]}:{ALICE[1]}", "--ssl-reqd", "--cacert", pki.cafile], timeout=20)
    assert r.returncode == 0 and r.stdout == canonical_crlf(msg), f"curl --ssl-reqd: exit {r.returncode} {r.stderr!r}"


def test_trusted_network_cidr(postie, tmp_path, pki):
    """--trusted-network 127.0.0.3/32: only that client may log in without TLS."""
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, extra=["--trusted-network", "127.0.0.3/32"])
    with POP3Raw(HOST, srv.plain, source="127.0.0.3") as c:
        assert "USER" in c.capa()
        c.login(*BOB)
        c.ok("QUIT")
    with POP3Raw(HOST, srv.plain, source="127.0.0.1") as c:
        assert "USER" not in c.capa()
        assert c.cmd(f"USER {BOB[0]}").startswith(PLAINTEXT_REFUSED)


REFUSED_BEFORE_TLS = ["USER alice", f"PASS {ALICE[1]}", "NOOP", "STAT", "LIST", "UIDL", "RETR 1", "TOP 1 0",
                      "DELE 1", "RSET", "APOP alice 0123456789abcdef0123456789abcdef", "AUTH PLAIN", "UTF8"]


def test_require_tls_refuses_everything_but_capa_stls_quit(postie, tmp_path, pki):
    # Loopback is a trusted network, and --require-tls must still win.
    srv = start_tls_server(postie, tmp_path, pki, extra=["--require-tls"])
    ctx = client_context(pki.cafile)
    for command in REFUSED_BEFORE_TLS:
        with POP3Raw(HOST, srv.plain) as c:
            r = c.cmd(command)
            assert r.startswith("-ERR"), f"--require-tls: {command!r} before TLS got {r!r}"
    with POP3Raw(HOST, srv.plain) as c:
        caps = c.capa()
        assert "STLS" in caps and "USER" not in caps, f"CAPA before TLS with --require-tls: {caps}"
        assert c.cmd("QUIT").startswith("+OK")
        assert c.expect_closed() == b""
    with POP3Raw(HOST, srv.plain) as c:
        assert c.cmd("USER alice").startswith("-ERR [AUTH]"), "the refusal should carry [AUTH]"
        c.ok("STLS")
        c.starttls(ctx)
        assert "USER" in c.capa()
        assert c.cmd("USER alice").startswith("+OK")
        c.login(*ALICE)
        c.ok("STAT")
        c.ok("QUIT")
    with POP3Raw(HOST, srv.tls, tls=ctx) as c:
        c.login(*ALICE)
        c.ok("QUIT")
    r = curl([f"pop3://127.0.0.1:{srv.plain}/", "-u", f"{ALICE[0]}:{ALICE[1]}"], timeout=20)
    assert r.returncode != 0, "curl without TLS logged in despite --require-tls"
    r = curl([f"pop3://127.0.0.1:{srv.plain}/", "-u", f"{ALICE[0]}:{ALICE[1]}", "--ssl-reqd", "--cacert", pki.cafile], timeout=20)
    assert r.returncode == 0, f"curl --ssl-reqd with --require-tls: exit {r.returncode}: {r.stderr.decode()}"
