"""A server for the authentication tests: alice (SHA512-CRYPT), bob ({PLAIN}) and any other
users with their schemes and passwd-file fields, one message each, fast failure throttling and
settings in a YAML file; and what a successful or failed login must look like.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .launcher import ServedBy
from .mail import ALICE, BOB, Maildir, PasswdFile, canonical_crlf
from .pop3 import POP3Raw
from .sasl import sasl_plain

# Failed logins are throttled per IP (2 s doubling); these keep the tests fast.
FAST = {"auth_failure_delay": 0.01, "auth_failure_max_delay": 0.02, "lockout_threshold": 1000}

DEFAULT_MECHS = ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"]
ALL_MECHS = "PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5"

# UTF-8 users (RFC 6856): a {PLAIN} one (usable by every mechanism) and a crypt one.
JOERG = ("jörg", "Grüße ✓ 42")
ZOE = ("zoë", "pässwörd-Ωmega")


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


def assert_logged_in(c, r: str, user: str, what: str) -> None:
    assert r.startswith("+OK"), f"{what}: {r!r} (transcript: {c.tail()})"
    n, _ = c.stat()
    assert n == 1, f"{what}: STAT shows {n} messages for {user}"
    assert c.retr(1) == canonical_crlf(message_for(user)), f"{what}: RETR 1 is not {user}'s message"


def assert_auth_error(r: str, what: str) -> None:
    assert r.startswith("-ERR [AUTH]"), f"{what}: expected -ERR [AUTH] ... (RFC 3206), got {r!r}"


def assert_alive(c, what: str) -> None:
    """The session still answers. CAPA, not NOOP: NOOP before login is a wrong-state command
    (RFC 1939 section 3) and would count towards the bad-command limit."""
    try:
        caps = c.capa()
    except Exception as e:  # noqa: BLE001 - any failure means the session is gone
        raise AssertionError(f"{what}: session did not survive (CAPA: {e}; transcript: {c.tail()})") from e
    assert caps, f"{what}: empty CAPA (transcript: {c.tail()})"


def login_reply(srv: Srv, user: str, password: str, via: str = "USER") -> str:
    with srv.conn() as c:
        r = c.try_login(user, password) if via == "USER" else sasl_plain(c, user, password)
        if r.startswith("+OK"):
            c.quit()
        return r
