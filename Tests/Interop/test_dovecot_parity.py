"""Where Postie follows the RFCs and Dovecot exactly (issue 14): CAPA in both states, NOOP and
bad commands before login, user names normalised as auth_username_format does, and the
passwd-file's per-user rules nologin, reason= and allow_nets= (docs/users.md)."""

from __future__ import annotations

import base64
import poplib

from kits.lmtp import lmtp, lmtp_env, data_replies
from kits.mail import ALICE, BOB
from kits.pop3 import POP3Raw

HOST = "127.0.0.1"
ANNOUNCED_IN_BOTH_STATES = ("USER", "SASL", "UTF8")


def both_state_lines(caps: list[str]) -> list[str]:
    return [c for c in caps if c.split(" ")[0] in ANNOUNCED_IN_BOTH_STATES]


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_capa_lists_user_sasl_and_utf8_in_both_states(env):
    """RFC 2449 section 5: what AUTHORIZATION offers is announced in both states."""
    p = poplib.POP3(env.host, env.port, timeout=15)
    try:
        before = both_state_lines([k + (" " + " ".join(v) if v else "") for k, v in p.capa().items()])
        p.user(ALICE[0])
        p.pass_(ALICE[1])
        after = both_state_lines([k + (" " + " ".join(v) if v else "") for k, v in p.capa().items()])
    finally:
        p.quit()
    assert sorted(before) == sorted(after), f"before login {before}, after {after}"
    assert {line.split(" ")[0] for line in before} == set(ANNOUNCED_IN_BOTH_STATES), before
    with POP3Raw(env.host, env.port) as c:
        c.login(*ALICE)
        assert c.cmd("USER alice").startswith("-ERR"), "USER after login must stay refused"
        assert c.cmd(f"AUTH PLAIN {plain(*ALICE)}").startswith("-ERR"), "AUTH after login must stay refused"


def test_noop_before_login_and_the_bad_command_limit(env):
    """RFC 1939: NOOP only in TRANSACTION; Dovecot's pop3-login hangs up on the 10th bad command."""
    with POP3Raw(env.host, env.port) as c:
        assert c.cmd("NOOP").startswith("-ERR"), "NOOP before login"
        for n in range(2, 10):  # NOOP was the first; 2..9 keep the connection
            r = c.cmd("STAT" if n % 2 else f"BOGUS{n}")
            assert r.startswith("-ERR"), f"bad command {n}: {r}"
        assert c.capa(), "nine bad commands must not end the session"
        r = c.cmd("NOOP")
        assert r == "-ERR Too many bad commands.", f"the 10th bad command got {r!r}"
        c.expect_closed()
    with POP3Raw(env.host, env.port) as c:
        # Probing an unoffered mechanism, APOP when off and STLS without TLS is not punished early.
        for probe in ("AUTH GSSAPI", "APOP alice 0123456789abcdef0123456789abcdef", "STLS") * 3:
            assert c.cmd(probe).startswith("-ERR"), probe
        c.login(*ALICE)
        assert c.cmd("NOOP").startswith("+OK"), "NOOP after login"


def test_names_are_lower_cased_as_dovecots_default(env):
    env.maildir(ALICE[0]).create().deliver(b"Subject: for alice\n\nhello\n")
    with POP3Raw(env.host, env.port) as c:
        assert c.login("Alice", ALICE[1]).startswith("+OK")
        assert b"Subject: for alice" in c.retr(1), "USER Alice must open alice's Maildir"
        with POP3Raw(env.host, env.port) as other:
            r = other.try_login("alice", ALICE[1])
            assert r.startswith("-ERR [IN-USE]"), f"Alice and alice at once: the second got {r!r}"
        r = POP3Raw(env.host, env.port)
        try:
            assert r.cmd(f"AUTH PLAIN {plain('ALICE', ALICE[1])}").startswith("-ERR [IN-USE]"), "SASL is normalised too"
        finally:
            r.close()
        c.quit()
    env.server.wait_log(r"Login: user=<alice>, method=USER, ")


def test_names_as_typed_with_percent_u(env_factory):
    env = env_factory(extra=["--username-format", "%u"])
    with POP3Raw(env.host, env.port) as c:
        assert c.try_login("Alice", ALICE[1]).startswith("-ERR [AUTH]"), "with %u, Alice is not alice"
    with POP3Raw(env.host, env.port) as c:
        assert c.login(*ALICE).startswith("+OK")


def test_default_domain_completes_a_bare_name(env_factory):
    def prefill(e):
        e.passwd.add("bob@example.org", "bob-at-domain-pw", scheme="PLAIN")
        e.passwd.write()

    env = env_factory(extra=["--default-domain", "example.org"], prefill=prefill)
    env.maildir("bob@example.org").create().deliver(b"Subject: domain mail\n\nx\n")
    with POP3Raw(env.host, env.port) as c:
        assert c.login("bob", "bob-at-domain-pw").startswith("+OK")
        assert b"Subject: domain mail" in c.retr(1)
        c.quit()
    env.server.wait_log(r"Login: user=<bob@example\.org>, method=USER, ")


def test_config_file_keys(env_factory, tmp_path):
    config = tmp_path / "parity.yaml"
    config.write_text("auth_username_format: '%u'\nauth_default_domain: example.org\n")
    env = env_factory(extra=["--config", str(config)])
    with POP3Raw(env.host, env.port) as c:
        assert c.try_login("Alice", ALICE[1]).startswith("-ERR [AUTH]"), "auth_username_format from the file"


def test_a_bad_username_format_stops_the_server(postie, tmp_path):
    s = postie.make(passwd=None, maildir=None, extra=["--passwd-file", "/dev/null", "--maildir", str(tmp_path / "%u"),
                                                     "--username-format", "%x"])
    try:
        s.start(ready_timeout=5)
        raise AssertionError("postie serve started with --username-format %x")
    except Exception:  # noqa: BLE001 - any failure to start is the expected outcome
        pass
    assert "--username-format" in s.output(), s.output()


def test_nologin_reason_after_the_right_password_only(env_factory):
    def prefill(e):
        e.passwd.add("carol", "carol-pw", scheme="PLAIN", extra="::::::nologin reason=Moved to mail.example.net, see the intranet")
        e.passwd.add("dave", "dave-pw", scheme="PLAIN", extra="::::::nologin")
        e.passwd.write()

    env = env_factory(prefill=prefill)
    with POP3Raw(env.host, env.port) as c:
        r = c.try_login("carol", "wrong")
        assert r == "-ERR [AUTH] Authentication failed.", f"the reason leaked before the password: {r!r}"
    with POP3Raw(env.host, env.port) as c:
        r = c.try_login("carol", "carol-pw")
        assert r == "-ERR [AUTH] Moved to mail.example.net, see the intranet", r
    with POP3Raw(env.host, env.port) as c:
        r = c.cmd(f"AUTH PLAIN {plain('carol', 'carol-pw')}")
        assert r == "-ERR [AUTH] Moved to mail.example.net, see the intranet", f"SASL: {r!r}"
    with POP3Raw(env.host, env.port) as c:
        assert c.try_login("dave", "dave-pw") == "-ERR [AUTH] Authentication failed."
    env.server.wait_log(r"Login refused: user=<carol>, method=USER, .*reason=nologin")
    env.server.wait_log(r"Login refused: user=<carol>, method=PLAIN, .*reason=nologin")


def test_allow_nets_fails_like_a_wrong_password(env_factory):
    def prefill(e):
        e.passwd.add("erin", "erin-pw", scheme="PLAIN", extra="::::::allow_nets=127.0.0.20/32,192.0.2.0/24")
        e.passwd.write()

    env = env_factory(prefill=prefill)
    with POP3Raw(env.host, env.port, source="127.0.0.20") as c:
        assert c.login("erin", "erin-pw").startswith("+OK"), "from an allowed network"
        c.quit()
    with POP3Raw(env.host, env.port, source="127.0.0.21") as c:
        refused = c.try_login("erin", "erin-pw")
    with POP3Raw(env.host, env.port, source="127.0.0.22") as c:
        wrong = c.try_login("erin", "not-the-password")
    assert refused == wrong == "-ERR [AUTH] Authentication failed.", (refused, wrong)
    with POP3Raw(env.host, env.port, source="127.0.0.23") as c:
        r = c.cmd(f"AUTH PLAIN {plain('erin', 'erin-pw')}")
        assert r == "-ERR [AUTH] Authentication failed.", f"SASL from outside allow_nets: {r!r}"
    env.server.wait_log(r"Login failed: user=<erin>, method=USER, rip=127\.0\.0\.21, .*reason=allow_nets: 127\.0\.0\.21 is not in ")
    env.server.wait_log(r"Login failed: user=<erin>, method=PLAIN, rip=127\.0\.0\.23, .*reason=allow_nets: ")


def test_lmtp_recipients_are_normalised(env_factory):
    e = lmtp_env(env_factory)
    c = lmtp(e)
    try:
        c.mail("sender@example.net")
        code, _ = c.rcpt("<ALICE>")
        assert code == 250, f"RCPT TO:<ALICE> got {code}"
        replies = data_replies(c, b"Subject: via LMTP\r\n\r\nbody\r\n", 1)
        assert replies[0][0] == 250, replies
    finally:
        c.quit()
    with POP3Raw(e.host, e.port) as p:
        p.login(*ALICE)
        assert b"Subject: via LMTP" in p.retr(1), "the message for ALICE must reach alice"


def test_scram_salts_do_not_tell_whether_a_user_exists(env):
    """RFC 5802 section 9: two spellings of one name get the same salt, known user or not
    (the fake salt of an unknown user derives from the normalised name, as the lookup does)."""

    def salt(name: str) -> str:
        with POP3Raw(env.host, env.port) as c:
            first = base64.b64encode(f"n,,n={name},r=abcdefgh".encode()).decode()
            r = c.cmd(f"AUTH SCRAM-SHA-256 {first}")
            assert r.startswith("+ "), r
            attrs = dict(a.split("=", 1) for a in base64.b64decode(r[2:]).decode().split(","))
            c.cmd("*")
            return attrs["s"]

    assert salt(BOB[0]) == salt(BOB[0].upper()), "a known user's salt depends on the spelling"
    assert salt("ghost") == salt("GHOST"), "an unknown user's salt depends on the spelling: existence leaks"
    assert salt("ghost") != salt("other-ghost")
