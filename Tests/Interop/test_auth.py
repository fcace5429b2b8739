"""Interop tests for authentication: SASL AUTH (RFC 5034) with PLAIN, LOGIN, CRAM-MD5 and
SCRAM-SHA-1/256 (RFC 5802, 7677), APOP (RFC 1939 section 7), UTF8 (RFC 6856), LOGIN-DELAY and
EXPIRE (RFC 2449), response codes (RFC 3206), and the user tools `postie user` and
`postie pw hash` (checked against Dovecot's `doveadm pw`).

Clients: curl, poplib, scramp's ScramClient and a raw socket client.  Needs the PyPI
package `scramp` and Debian's `dovecot-core` (for doveadm); either missing is a
failure, never a skip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import poplib
import random
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import note
from kits.launcher import free_port, ServedBy
from kits.mail import ALICE, BOB, canonical_crlf, Maildir, PasswdFile
from kits.pop3 import POP3Raw
from kits.tools import curl, doveadm_pw_test
from kits.tls import client_context, make_pki, start_tls_server

try:
    import scramp
except ImportError:  # reported by the tests that need it, as a failure
    scramp = None

HOST = "127.0.0.1"

# Failed logins are throttled per IP (2 s doubling); these keep the tests fast.
FAST = {"auth_failure_delay": 0.01, "auth_failure_max_delay": 0.02, "lockout_threshold": 1000}

DEFAULT_MECHS = ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"]
ALL_MECHS = "PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5"

# UTF-8 users (RFC 6856): a {PLAIN} one (usable by every mechanism) and a crypt one.
JOERG = ("jörg", "Grüße ✓ 42")
ZOE = ("zoë", "pässwörd-Ωmega")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def b64e(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def need_scramp():
    if scramp is None:
        pytest.fail("the PyPI package scramp is missing (pip install scramp; scripts/test must install it)",
                    pytrace=False)


def fields(**kv) -> str:
    """The passwd-file fields after the password: uid:gid:gecos:home:shell:extra_fields."""
    return "::::::" + " ".join(f"{k}={v}" for k, v in kv.items())


def message_for(user: str) -> bytes:
    return (f"From: sender@example.org\nTo: {user}@example.org\nSubject: for {user}\n"
            f"Message-ID: <auth-{hashlib.sha1(user.encode()).hexdigest()[:12]}@example.org>\n\n"
            f"Hello {user}.\n.a line with a leading dot\nbye\n").encode("utf-8")


def write_yaml(path: Path, settings: dict) -> Path:
    lines = []
    for k, v in settings.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, str):
            v = '"' + v + '"'
        lines.append(f"{k}: {v}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Srv(ServedBy):
    server: object
    tmp: Path
    passwd: PasswdFile
    template: str
    users: dict[str, str] = field(default_factory=dict)

    def conn(self, **kw) -> POP3Raw:
        return POP3Raw(self.host, self.port, **kw)

    def maildir(self, user: str) -> Maildir:
        return Maildir(Path(self.template.replace("%u", user)))

    def log_lines(self, pattern: str) -> list[str]:
        return self.server.log_lines(pattern)

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        return self.server.wait_log(pattern, timeout=timeout, count=count)


def serve(postie, tmp: Path, *, users: dict | None = None, args: list[str] | None = None,
          config: dict | None = None, name: str | None = None) -> Srv:
    """Starts a server with alice (SHA512-CRYPT) and bob ({PLAIN}) plus `users`
    (name -> (password, scheme[, passwd-file fields after the hash])), one message each,
    and the fast throttle settings plus `config` in a YAML file."""
    name = name or f"auth{len(postie.servers) + 1}"
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    pw = PasswdFile(d / "passwd")
    all_users = {ALICE[0]: (ALICE[1], "SHA512-CRYPT"), BOB[0]: (BOB[1], "PLAIN")}
    all_users.update(users or {})
    plain = {}
    for user, spec in all_users.items():
        password, scheme = spec[0], spec[1]
        pw.add(user, password, scheme=scheme, extra=spec[2] if len(spec) > 2 else "")
        plain[user] = password
    pw.write()
    template = str(d / "mail" / "%u")
    for user in all_users:
        Maildir(Path(template.replace("%u", user))).deliver(message_for(user))
    cfg = write_yaml(d / "postie.yaml", {**FAST, **(config or {})})
    s = postie.start(passwd=pw.path, maildir=template, extra=["--config", str(cfg)] + (args or []), name=name)
    return Srv(s, d, pw, template, plain)


def capa(c) -> list[str]:
    r, lines = c.multi("CAPA")
    assert r.startswith("+OK"), f"CAPA got {r!r}"
    return [l.decode("utf-8") for l in lines]


def capa_value(lines: list[str], key: str) -> str | None:
    for l in lines:
        if l == key or l.startswith(key + " "):
            return l[len(key):].strip()
    return None


def sasl_list(lines: list[str]) -> list[str] | None:
    v = capa_value(lines, "SASL")
    return None if v is None else v.split()


def assert_logged_in(c, r: str, user: str, what: str) -> None:
    assert r.startswith("+OK"), f"{what}: {r!r} (transcript: {c.tail()})"
    n, _ = c.stat()
    assert n == 1, f"{what}: STAT shows {n} messages for {user}"
    assert c.retr(1) == canonical_crlf(message_for(user)), f"{what}: RETR 1 is not {user}'s message"


def assert_auth_error(r: str, what: str) -> None:
    assert r.startswith("-ERR [AUTH]"), f"{what}: expected -ERR [AUTH] ... (RFC 3206), got {r!r}"


def assert_alive(c, what: str) -> None:
    r = c.cmd("NOOP")
    assert r.startswith("+OK"), f"{what}: session did not survive (NOOP got {r!r}; transcript: {c.tail()})"


def sasl_plain(c, user: str, password: str, authzid: str = "", initial: bool = True) -> str:
    msg = f"{authzid}\0{user}\0{password}"
    if initial:
        return c.cmd(f"AUTH PLAIN {b64e(msg)}")
    r = c.cmd("AUTH PLAIN")
    if r != "+ ":
        return r
    return c.cmd(b64e(msg))


@dataclass
class ScramResult:
    reply: str  # the final status line (+OK or -ERR)
    server_first: str | None = None
    server_final: str | None = None
    steps: list[str] = field(default_factory=list)


def scram_login(c, mech: str, user: str, password: str, *, initial: bool = True) -> ScramResult:
    """A full SCRAM exchange (RFC 5802) with scramp's client over AUTH (RFC 5034).

    The server's final message (v=...) comes as a last continuation that the client answers
    with an empty line (RFC 4422 section 5, item 5: no additional data with success in POP3).
    scramp's set_server_final raises if the server signature is wrong."""
    need_scramp()
    client = scramp.ScramClient([mech], user, password)
    first = client.get_client_first()
    res = ScramResult("")
    if initial:
        r = c.cmd(f"AUTH {mech} {b64e(first)}")
    else:
        r = c.cmd(f"AUTH {mech}")
        res.steps.append(r)
        assert r == "+ ", f"AUTH {mech} without initial response: expected an empty challenge '+ ', got {r!r}"
        r = c.cmd(b64e(first))
    res.steps.append(r)
    if not r.startswith("+ "):
        res.reply = r
        return res
    res.server_first = b64d(r[2:]).decode("utf-8")
    client.set_server_first(res.server_first)
    r = c.cmd(b64e(client.get_client_final()))
    res.steps.append(r)
    if not r.startswith("+ "):
        res.reply = r
        return res
    res.server_final = b64d(r[2:]).decode("utf-8")
    client.set_server_final(res.server_final)  # raises ScramException on a bad server signature
    res.reply = c.cmd("")
    res.steps.append(res.reply)
    return res


SERVER_FIRST_RX = re.compile(r"^r=([!-+\--~]+),s=([A-Za-z0-9+/]+=*),i=(\d+)$")


def run_postie(postie_bin, args: list[str], stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(postie_bin)] + args, input=None if stdin is None else stdin.encode("utf-8"),
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("authpki"))


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
        caps = capa(c)
        assert sasl_list(caps) == DEFAULT_MECHS, f"default SASL list: {caps}"
        r = c.cmd("AUTH CRAM-MD5")
        assert r.startswith("-ERR"), f"AUTH CRAM-MD5 when not enabled: {r!r}"
        assert_alive(c, "after refused AUTH CRAM-MD5")
    r = curl([f"pop3://{HOST}:{srv.port}/1", "-u", f"{BOB[0]}:{BOB[1]}", "--login-options", "AUTH=CRAM-MD5"])
    assert r.returncode != 0, "curl AUTH=CRAM-MD5 logged in although CRAM-MD5 is not enabled"


def test_auth_mechanisms_option_restricts_and_orders(postie, tmp_path):
    srv = serve(postie, tmp_path, args=["--auth-mechanisms", "scram-sha-1,cram-md5, PLAIN"])
    with srv.conn() as c:
        assert sasl_list(capa(c)) == ["SCRAM-SHA-1", "CRAM-MD5", "PLAIN"]
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
    for method, user in (("SCRAM-SHA-256", "ghost-SCRAM-SHA-256"), ("CRAM-MD5", "ghost-CRAM-MD5")):
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
            assert p.noop().startswith(b"+OK")
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
        assert p.noop().startswith(b"+OK")
    finally:
        p.close()
    assert not srv.log_lines(r"Login: .*method=APOP"), "APOP logged in although it is off"


# --------------------------------------------------------------------------
# 4. Concurrent `postie user` edits
# --------------------------------------------------------------------------

PASSWD_LINE_RX = re.compile(r"^([^:\s#][^:\s]*):\{([A-Z0-9.-]+)\}([^:\n]*)(:[^:\n]*){0,6}$")


def parse_passwd(path: Path) -> dict[str, tuple[str, str]]:
    """user -> (scheme, line); asserts every line is a comment, blank, or a well-formed entry."""
    users: dict[str, tuple[str, str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line == "" or line.startswith("#"):
            continue
        m = PASSWD_LINE_RX.match(line)
        assert m, f"{path}:{n}: malformed line {line!r}"
        assert m.group(1) not in users, f"{path}:{n}: user {m.group(1)} appears twice"
        users[m.group(1)] = (m.group(2), line)
    return users


def run_concurrently(postie_bin, jobs: list[tuple[list[str], str | None]], timeout: float = 120):
    """Starts every job first (each blocks reading its password), then feeds all stdins at once."""
    procs = [subprocess.Popen([str(postie_bin)] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for args, _ in jobs]
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def feed(i: int) -> None:
        barrier.wait()
        stdin = jobs[i][1]
        try:
            out, err = procs[i].communicate(None if stdin is None else (stdin + "\n").encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            procs[i].kill()
            out, err = procs[i].communicate()
        results[i] = (procs[i].returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_user_add_loses_nothing(postie, postie_bin, tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("# managed by postie user\n\n")
    n = 36
    pw = {f"user{i}": f"pw-{i}-{random.randrange(10**9)}" for i in range(n)}
    scheme = {u: ("PLAIN" if i % 2 else "SHA512-CRYPT") for i, u in enumerate(pw)}
    jobs = [(["user", "add", u, "--passwd-file", str(passwd), "--scheme", scheme[u]], pw[u]) for u in pw]
    results = run_concurrently(postie_bin, jobs)
    for (args, _), (rc, out, err) in zip(jobs, results):
        assert rc == 0, f"postie {' '.join(args)}: exit {rc}: {err}"
    users = parse_passwd(passwd)
    assert set(users) == set(pw), f"lost: {sorted(set(pw) - set(users))}, extra: {sorted(set(users) - set(pw))}"
    for u in pw:
        assert users[u][0] == scheme[u], f"{u}: scheme {users[u][0]}, want {scheme[u]}"
        assert pw[u] not in users[u][1] or scheme[u] == "PLAIN", f"{u}: clear password in a {scheme[u]} line"
    assert passwd.read_text().startswith("# managed by postie user\n"), "the comment header was lost"
    assert not list(tmp_path.glob("passwd.tmp*")), f"temporary files left: {list(tmp_path.glob('passwd.tmp*'))}"
    # `postie user list` lists them all with their schemes.
    r = run_postie(postie_bin, ["user", "list", "--passwd-file", str(passwd)])
    assert r.returncode == 0, r.stderr
    listed = dict(l.split("\t") for l in r.stdout.decode().splitlines())
    assert listed == {u: "{" + scheme[u] + "}" for u in pw}, f"user list: {listed}"
    # Every user can log in over POP3.
    template = str(tmp_path / "mail" / "%u")
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    s = postie.start(passwd=passwd, maildir=template, extra=["--config", str(cfg)])
    for u in pw:
        with POP3Raw(s.host, s.port) as c:
            r = c.try_login(u, pw[u])
            assert r.startswith("+OK"), f"{u} ({scheme[u]}) cannot log in: {r!r}"
            c.quit()


def test_concurrent_add_passwd_del_mixed_with_running_server(postie, postie_bin, tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("# header comment\n")
    old = {f"keep{i}": f"old-{i}" for i in range(10)}
    gone = {f"gone{i}": f"gone-{i}" for i in range(10)}
    for u, p in {**old, **gone}.items():
        r = run_postie(postie_bin, ["user", "add", u, "--passwd-file", str(passwd), "--scheme", "PLAIN"], p)
        assert r.returncode == 0, r.stderr
    template = str(tmp_path / "mail" / "%u")
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    s = postie.start(passwd=passwd, maildir=template, extra=["--config", str(cfg)])
    with POP3Raw(s.host, s.port) as c:
        assert c.try_login("keep0", old["keep0"]).startswith("+OK")
        c.quit()

    new = {f"new{i}": f"new-{i}" for i in range(20)}
    changed = {u: f"changed-{i}" for i, u in enumerate(old)}
    jobs = []
    jobs += [(["user", "add", u, "--passwd-file", str(passwd)], p) for u, p in new.items()]
    jobs += [(["user", "passwd", u, "--passwd-file", str(passwd), "--scheme", "SHA256-CRYPT"], p)
             for u, p in changed.items()]
    jobs += [(["user", "del", u, "--passwd-file", str(passwd)], None) for u in gone]
    random.Random(7).shuffle(jobs)
    results = run_concurrently(postie_bin, jobs)
    for (args, _), (rc, out, err) in zip(jobs, results):
        assert rc == 0, f"postie {' '.join(args)}: exit {rc}: {err}"

    users = parse_passwd(passwd)
    assert set(users) == set(new) | set(changed), (
        f"lost: {sorted((set(new) | set(changed)) - set(users))}, not deleted: {sorted(set(users) & set(gone))}")
    assert all(users[u][0] == "SHA256-CRYPT" for u in changed), {u: users[u][0] for u in changed}
    assert all(users[u][0] == "SHA512-CRYPT" for u in new)
    assert passwd.read_text().startswith("# header comment\n")
    r = run_postie(postie_bin, ["user", "list", "--passwd-file", str(passwd)])
    assert sorted(l.split("\t")[0] for l in r.stdout.decode().splitlines()) == sorted(users)

    # The running server picked up the new file (it re-reads on change).
    deadline = time.monotonic() + 60
    for u, p in list(new.items())[::4] + list(changed.items())[::3]:
        while True:
            with POP3Raw(s.host, s.port) as c:
                r = c.try_login(u, p)
                c.quit()
            if r.startswith("+OK") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.startswith("+OK"), f"{u} cannot log in after the edits: {r!r}"
    for u, p in list(old.items())[:3]:
        with POP3Raw(s.host, s.port) as c:
            assert_auth_error(c.try_login(u, p), f"{u} with the old password")
    for u, p in list(gone.items())[:3]:
        with POP3Raw(s.host, s.port) as c:
            assert_auth_error(c.try_login(u, p), f"deleted {u}")


def test_user_commands_refuse_bad_input(postie_bin, tmp_path):
    passwd = tmp_path / "passwd"
    assert run_postie(postie_bin, ["user", "add", "bob", "--passwd-file", str(passwd)], "pw1").returncode == 0
    before = passwd.read_bytes()
    cases = [
        (["user", "add", "bob", "--passwd-file", str(passwd)], "pw2", "duplicate user"),
        (["user", "add", "carol", "--passwd-file", str(passwd)], "", "empty password"),
        (["user", "add", "carol", "--passwd-file", str(passwd)], None, "no password on stdin"),
        (["user", "add", "ca:rol", "--passwd-file", str(passwd)], "pw", "':' in the name"),
        (["user", "add", "ca rol", "--passwd-file", str(passwd)], "pw", "space in the name"),
        (["user", "add", "carol", "--passwd-file", str(passwd), "--scheme", "NO-SUCH-SCHEME"], "pw", "unknown scheme"),
        (["user", "add", "carol", "--passwd-file", str(passwd), "--password", "pw"], "pw", "password as an argument"),
        (["user", "passwd", "nobody", "--passwd-file", str(passwd)], "pw", "passwd of an unknown user"),
        (["user", "del", "nobody", "--passwd-file", str(passwd)], None, "del of an unknown user"),
        (["pw", "hash", "--password", "pw"], "pw", "pw hash with the password as an argument"),
    ]
    for args, stdin, what in cases:
        r = subprocess.run([str(postie_bin)] + args, input=b"" if stdin is None else (stdin + "\n").encode(),
                           capture_output=True, timeout=30)
        assert r.returncode != 0, f"{what}: postie {' '.join(args)} succeeded: {r.stdout!r}"
        assert passwd.read_bytes() == before, f"{what}: the passwd-file changed"


def test_user_add_plain_password_with_colon_is_refused_or_works(postie, postie_bin, tmp_path):
    """A {PLAIN} password is stored verbatim in a ':'-separated line; one containing ':' must
    either be refused or still log in with exactly that password (and not with a prefix)."""
    passwd = tmp_path / "passwd"
    r = run_postie(postie_bin, ["user", "add", "colon", "--passwd-file", str(passwd), "--scheme", "PLAIN"], "ab:cd")
    if r.returncode != 0:
        assert "colon" not in passwd.read_text() if passwd.exists() else True
        return
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    s = postie.start(passwd=passwd, maildir=str(tmp_path / "mail" / "%u"), extra=["--config", str(cfg)])
    with POP3Raw(s.host, s.port) as c:
        whole = c.try_login("colon", "ab:cd")
        prefix = c.try_login("colon", "ab")
    assert prefix.startswith("-ERR"), (f"`postie user add --scheme PLAIN` with password 'ab:cd' wrote "
                                       f"{passwd.read_text()!r}: the prefix 'ab' logs in")
    assert whole.startswith("+OK"), f"password 'ab:cd' was accepted by `user add` but cannot log in: {whole!r}"


def test_user_add_home_and_extra_fields(postie, postie_bin, tmp_path):
    passwd = tmp_path / "passwd"
    home = tmp_path / "homes" / "dora"
    r = run_postie(postie_bin, ["user", "add", "dora", "--passwd-file", str(passwd), "--home", str(home),
                                "--extra", "login_delay=7 expire=30"], "dora-pw")
    assert r.returncode == 0, r.stderr
    line = [l for l in passwd.read_text().splitlines() if l.startswith("dora:")][0]
    f = line.split(":")
    assert len(f) == 8 and f[5] == str(home) and f[7] == "login_delay=7 expire=30", f"line {line!r}"
    Maildir(home / "Maildir").deliver(message_for("dora"))
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    s = postie.start(passwd=passwd, maildir="%h/Maildir", extra=["--config", str(cfg)])
    with POP3Raw(s.host, s.port) as c:
        assert_logged_in(c, c.login("dora", "dora-pw"), "dora", "user with --home")
        caps = capa(c)
        assert capa_value(caps, "LOGIN-DELAY") == "7" and capa_value(caps, "EXPIRE") == "30", caps
    # passwd keeps home and extra fields.
    assert run_postie(postie_bin, ["user", "passwd", "dora", "--passwd-file", str(passwd)], "dora-pw2").returncode == 0
    line2 = [l for l in passwd.read_text().splitlines() if l.startswith("dora:")][0]
    assert line2.split(":")[2:] == f[2:], f"passwd changed other fields: {line!r} -> {line2!r}"


# --------------------------------------------------------------------------
# 5. `postie pw hash` verified by Dovecot's doveadm
# --------------------------------------------------------------------------

PW = "correct horse ✓ 42"


def pw_hash(postie_bin, scheme: str, password: str = PW) -> subprocess.CompletedProcess:
    return run_postie(postie_bin, ["pw", "hash", "--scheme", scheme], password)


@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "PLAIN"])
def test_pw_hash_verifies_with_doveadm(postie_bin, doveadm, scheme):
    r = pw_hash(postie_bin, scheme)
    assert r.returncode == 0, f"postie pw hash --scheme {scheme}: exit {r.returncode}: {r.stderr!r}"
    h = r.stdout.decode().strip()
    assert h.startswith("{" + scheme + "}") and "\n" not in h, f"output {h!r}"
    assert PW not in h or scheme == "PLAIN", f"{scheme} output contains the password"
    v = doveadm_pw_test(doveadm, h, PW)
    assert v.returncode == 0 and b"(verified)" in v.stdout, f"doveadm pw -t {h!r}: {v.stdout!r} {v.stderr!r}"
    v = doveadm_pw_test(doveadm, h, PW + "x")
    assert v.returncode != 0, f"doveadm verified {h!r} with a wrong password"
    if scheme != "PLAIN":
        again = pw_hash(postie_bin, scheme).stdout.decode().strip()
        assert again != h, f"{scheme}: two hashes of the same password are equal (no random salt)"


@pytest.fixture(scope="module")
def scheme_survey(postie_bin, doveadm):
    """Every scheme `doveadm pw -l` lists, sorted into those `postie pw hash` writes and refuses."""
    r = subprocess.run([doveadm, "pw", "-l"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    schemes = r.stdout.decode().split()
    assert "SHA512-CRYPT" in schemes, schemes
    accepted: dict[str, str] = {}
    refused: dict[str, str] = {}
    for s in schemes:
        out = pw_hash(postie_bin, s)
        if out.returncode == 0:
            accepted[s] = out.stdout.decode().strip()
        else:
            refused[s] = out.stderr.decode(errors="replace").strip().splitlines()[-1] if out.stderr else ""
    note(f"postie pw hash writes {len(accepted)} of doveadm's {len(schemes)} schemes: {' '.join(sorted(accepted))}")
    note(f"postie pw hash refuses: {' '.join(sorted(refused))}")
    return accepted, refused


def test_pw_hash_every_accepted_doveadm_scheme_verifies(doveadm, scheme_survey):
    accepted, refused = scheme_survey
    for s in ("SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "PLAIN"):
        assert s in accepted, f"postie pw hash refuses {s}: {refused.get(s)}"
    failures = []
    for s, h in sorted(accepted.items()):
        prefix = h[1:h.index("}")] if h.startswith("{") and "}" in h else None
        if prefix is None or prefix.split(".")[0].upper() != s:
            failures.append(f"{s}: output {h!r} does not start with {{{s}}}")
            continue
        v = doveadm_pw_test(doveadm, h, PW)
        if v.returncode != 0 or b"(verified)" not in v.stdout:
            failures.append(f"{s}: doveadm pw -t {h!r}: exit {v.returncode} {v.stderr.decode(errors='replace').strip()}")
            continue
        if doveadm_pw_test(doveadm, h, "wrong " + PW).returncode == 0:
            failures.append(f"{s}: doveadm verifies {h!r} with a wrong password")
    assert not failures, "schemes postie writes that Dovecot does not verify:\n" + "\n".join(failures)


def test_pw_hash_output_logs_in(postie, tmp_path, scheme_survey):
    """Whatever `postie pw hash` writes, the server itself must accept at login."""
    accepted, _ = scheme_survey
    pwf = PasswdFile(tmp_path / "passwd")
    users = {}
    for i, (s, h) in enumerate(sorted(accepted.items())):
        u = f"s{i}"
        users[u] = s
        pwf.entries[u] = h
    pwf.write()
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    srv = postie.start(passwd=pwf.path, maildir=str(tmp_path / "mail" / "%u"), extra=["--config", str(cfg)])
    failures = []
    for u, s in users.items():
        with POP3Raw(srv.host, srv.port) as c:
            w = c.try_login(u, "wrong " + PW)
            if not w.startswith("-ERR"):
                failures.append(f"{{{s}}}: a wrong password got {w}")
            r = c.try_login(u, PW)
            if not r.startswith("+OK"):
                failures.append(f"{{{s}}}: {r}")
    assert not failures, "hashes from `postie pw hash` that `postie serve` does not accept:\n" + "\n".join(failures)


# --------------------------------------------------------------------------
# 6. LOGIN-DELAY and EXPIRE (RFC 2449 sections 6.5, 6.7, 8.1.1)
# --------------------------------------------------------------------------


def login_reply(srv: Srv, user: str, password: str, via: str = "USER") -> str:
    with srv.conn() as c:
        r = c.try_login(user, password) if via == "USER" else sasl_plain(c, user, password)
        if r.startswith("+OK"):
            c.quit()
        return r


def test_login_delay_global(postie, tmp_path):
    # 10 s: the refusals below must all come within the delay even on a slow machine.
    srv = serve(postie, tmp_path, users={"carol": ("carol-pw", "PLAIN")}, config={"login_delay": 10})
    with srv.conn() as c:
        caps = capa(c)
        assert capa_value(caps, "LOGIN-DELAY") == "10 USER", caps
        assert_logged_in(c, c.login(*BOB), BOB[0], "first login")
        t0 = time.monotonic()  # the server's clock started before its +OK
        assert capa_value(capa(c), "LOGIN-DELAY") == "10"
        c.quit()
    for via in ("USER", "AUTH"):
        r = login_reply(srv, *BOB, via=via)
        assert r.startswith("-ERR [LOGIN-DELAY]"), f"second login within the delay via {via}: {r!r}"
    srv.wait_log(r"Login refused: user=<bob>, method=USER, .*reason=login delay")
    srv.wait_log(r"Login refused: user=<bob>, method=PLAIN, .*reason=login delay")
    # Per user: alice is not delayed by bob's login.
    assert login_reply(srv, *ALICE).startswith("+OK")
    # A failed login does not start the clock.
    assert_auth_error(login_reply(srv, "carol", "wrong"), "carol wrong password")
    assert login_reply(srv, "carol", "carol-pw").startswith("+OK"), "carol's first good login was delayed"
    assert login_reply(srv, "carol", "carol-pw").startswith("-ERR [LOGIN-DELAY]")
    # After the delay bob may log in again.
    time.sleep(max(0.0, 10.2 - (time.monotonic() - t0)))
    r = login_reply(srv, *BOB)
    assert r.startswith("+OK"), f"bob still refused after the delay: {r!r}"


def test_login_delay_per_user(postie, tmp_path):
    srv = serve(postie, tmp_path, users={"dave": ("dave-pw", "PLAIN", fields(login_delay=30)),
                                         "erin": ("erin-pw", "SHA512-CRYPT", fields(login_delay=0))})
    with srv.conn() as c:
        assert capa_value(capa(c), "LOGIN-DELAY") == "0 USER"
        assert_logged_in(c, c.login("dave", "dave-pw"), "dave", "dave")
        assert capa_value(capa(c), "LOGIN-DELAY") == "30", "dave's own LOGIN-DELAY after login"
        c.quit()
    r = login_reply(srv, "dave", "dave-pw")
    assert r.startswith("-ERR [LOGIN-DELAY]"), f"dave's second login: {r!r}"
    m = re.search(r"(\d+) seconds", r)
    assert m and 25 <= int(m.group(1)) <= 30, f"wait time in {r!r}"
    for _ in range(2):
        with srv.conn() as c:
            assert_logged_in(c, c.login(*BOB), BOB[0], "bob (no delay)")
            assert capa_value(capa(c), "LOGIN-DELAY") == "0"
            c.quit()


def test_login_delay_global_overridden_by_user_zero(postie, tmp_path):
    srv = serve(postie, tmp_path, users={"fast": ("fast-pw", "PLAIN", fields(login_delay=0))},
                config={"login_delay": 60})
    for _ in range(2):
        with srv.conn() as c:
            assert_logged_in(c, c.login("fast", "fast-pw"), "fast", "user with login_delay=0")
            assert capa_value(capa(c), "LOGIN-DELAY") == "0"
            c.quit()
    assert login_reply(srv, *BOB).startswith("+OK")
    assert login_reply(srv, *BOB).startswith("-ERR [LOGIN-DELAY]")


def test_expire_global_and_per_user(postie, tmp_path):
    srv = serve(postie, tmp_path, config={"expire": 30},
                users={"keep": ("keep-pw", "PLAIN", fields(expire="NEVER")),
                       "short": ("short-pw", "PLAIN", fields(expire=5))})
    with srv.conn() as c:
        assert capa_value(capa(c), "EXPIRE") == "30 USER", "EXPIRE before login"
    for user, pw, want in ((BOB[0], BOB[1], "30"), ("keep", "keep-pw", "NEVER"), ("short", "short-pw", "5")):
        with srv.conn() as c:
            assert_logged_in(c, c.login(user, pw), user, user)
            caps = capa(c)
            assert capa_value(caps, "EXPIRE") == want, f"{user}: CAPA after login {caps}"
            c.quit()


def test_expire_and_login_delay_defaults(postie, tmp_path):
    srv = serve(postie, tmp_path)
    with srv.conn() as c:
        caps = capa(c)
        assert capa_value(caps, "EXPIRE") == "NEVER USER" and capa_value(caps, "LOGIN-DELAY") == "0 USER", caps


def test_bad_login_delay_and_expire_settings_are_refused(postie_bin, tmp_path):
    (tmp_path / "passwd").write_text("bob:{PLAIN}x\n")
    for settings, key in (({"login_delay": -1}, "login_delay"), ({"expire": "sometimes"}, "expire")):
        cfg = write_yaml(tmp_path / f"{key}.yaml", settings)
        r = run_postie(postie_bin, ["serve", "--listen", f"{HOST}:{free_port()}", "--passwd-file", str(tmp_path / "passwd"),
                                    "--maildir", str(tmp_path / "%u"), "--config", str(cfg)], timeout=20)
        assert r.returncode != 0 and key.encode() in r.stderr, f"{settings}: exit {r.returncode}: {r.stderr!r}"


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
        # The third bad command before login ends the session (Dovecot's limit, docs/configuration.md).
        r = c.cmd("AUTH PLAIN abc")  # length not a multiple of 4
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
        want = sasl_list(capa(c))
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
        caps = capa(c)
        assert sasl_list(caps) == DEFAULT_MECHS and "USER" in caps, caps
    with untrusted.conn() as c:
        caps = capa(c)
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
        caps = capa(c)
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
