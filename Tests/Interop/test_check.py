"""`postie check HOST` against Dovecot (Debian's dovecot-pop3d) and against `postie serve`.

Every verdict the issue names: a self-signed certificate (CRITICAL without --ca-file, fine
with it), an expired certificate, an incomplete chain, no STLS, TLS 1.0 still accepted, a
closed port, plaintext login offered before TLS; the STLS-injection test against a safe
server (Postie, Dovecot) and a deliberately vulnerable one; perfdata checked against the
monitoring-plugins grammar; --json; --transcript with the password hidden; and the client
library (through `--login-method`) against Dovecot with each SASL mechanism, USER/PASS,
STLS and port 995, pipelining, and the [AUTH] and [IN-USE] errors.
"""

from __future__ import annotations

import json
import os
import poplib
import re
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kits.launcher import free_port, HOST
from kits.mail import BOB, Maildir, make_passwd
from kits.scripted import ScriptedServer, ScriptedSession
from kits.tls import self_signed, TestCA

LOCAL = ["DNS:localhost", "IP:127.0.0.1"]
MESSAGES = [b"Subject: one\r\n\r\nfirst body\r\n", b"Subject: two\r\n\r\nsecond\r\nbody\r\n"]
MAILBOX_SIZE = sum(len(m) for m in MESSAGES)


# --------------------------------------------------------------------------
# Certificates (made once per module)
# --------------------------------------------------------------------------


@dataclass
class CheckPKI:
    root: TestCA
    good: object  # leaf from root, 400 days
    chained: object  # leaf from the intermediate
    chained_full: Path  # that leaf followed by the intermediate
    expired: object
    self_signed: object


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CheckPKI:
    d = tmp_path_factory.mktemp("check-pki")
    os.chmod(d, 0o755)
    root = TestCA(d, "Postie Check Test Root", days=3650)
    inter = root.intermediate("inter", "Postie Check Test Intermediate", days=3650)
    chained = inter.leaf("chained", "chained.test", LOCAL, 0x3001, days=400)
    full = d / "chained-full.pem"
    full.write_bytes(chained.cert.read_bytes() + inter.cert.read_bytes())
    return CheckPKI(
        root=root,
        good=root.leaf("good", "good.test", LOCAL, 0x3002, days=400),
        chained=chained,
        chained_full=full,
        expired=root.expired_leaf("expired", "expired.test", LOCAL, 0x3003),
        self_signed=self_signed(d, "selfsigned", "selfsigned.test", LOCAL),
    )


# --------------------------------------------------------------------------
# Running the check and reading its output
# --------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def status_line(self) -> str:
        return self.stdout.splitlines()[0]

    @property
    def perfdata(self) -> dict[str, "Perf"]:
        return parse_perfdata(self.status_line)

    def __str__(self) -> str:
        return f"exit {self.code}\n{self.stdout}\n{self.stderr}"


def run_check(postie_bin: Path, *args, env: dict | None = None, timeout: float = 90) -> Result:
    e = dict(os.environ)
    e.pop("POSTIE_PASSWORD", None)
    e.update(env or {})
    r = subprocess.run([str(postie_bin), "check", *map(str, args)], capture_output=True, timeout=timeout, env=e)
    return Result(r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))


def run_json(postie_bin: Path, *args, **kw) -> tuple[Result, dict]:
    r = run_check(postie_bin, *args, "--json", **kw)
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"--json output is not JSON ({e}):\n{r}")
    assert doc["exit_code"] == r.code, r
    return r, doc


def items(doc: dict) -> dict[str, dict]:
    return {i["id"]: i for i in doc["items"]}


def verdict(doc: dict, item_id: str) -> str:
    found = items(doc)
    assert item_id in found, f"no item {item_id}: {sorted(found)}"
    return found[item_id]["verdict"]


@dataclass
class Perf:
    value: float
    uom: str
    warn: str
    crit: str
    min: str
    max: str


# monitoring-plugins guidelines, "Performance data":
#   'label'=value[UOM];[warn];[crit];[min];[max]
# label: any characters but '=' and "'", quoted with ' if it has spaces or quotes ('' for ');
# value and min/max in [-0-9.]; warn/crit are ranges [@][start:][end] with ~ for -infinity;
# UOM: none, s/ms/us, %, B/KB/MB/TB, c.
_RANGE = r"@?(?:(?:~|-?[0-9.]+)?:)?(?:-?[0-9.]+)?"
_PERF = re.compile(
    r"(?:'((?:[^'=]|'')+)'|([^'= ]+))="
    r"(-?[0-9.]+)(s|ms|us|%|B|KB|MB|TB|c)?"
    rf"(?:;({_RANGE})(?:;({_RANGE})(?:;(-?[0-9.]*)(?:;(-?[0-9.]*))?)?)?)?"
    r"(?= |$)")


def parse_perfdata(status_line: str) -> dict[str, Perf]:
    assert status_line.count("|") == 1, f"the status line needs exactly one '|': {status_line!r}"
    text, perf = status_line.split("|")
    assert re.match(r"^POP3 (OK|WARNING|CRITICAL|UNKNOWN) - \S", text), status_line
    perf = perf.strip()
    out: dict[str, Perf] = {}
    pos = 0
    while pos < len(perf):
        m = _PERF.match(perf, pos)
        assert m, f"perfdata does not parse at {perf[pos:]!r} (whole: {perf!r})"
        label = (m.group(1) or m.group(2)).replace("''", "'")
        out[label] = Perf(float(m.group(3)), m.group(4) or "", m.group(5) or "", m.group(6) or "",
                          m.group(7) or "", m.group(8) or "")
        pos = m.end()
        while pos < len(perf) and perf[pos] == " ":
            pos += 1
    return out


def test_perfdata_parser_rejects_malformed():
    """The parser itself: a value with a unit the guidelines do not know, or two '|'."""
    assert parse_perfdata("POP3 OK - x | 'a b'=1.5s;1;2;0 c=3;@1:2;~:4")["a b"].value == 1.5
    with pytest.raises(AssertionError):
        parse_perfdata("POP3 OK - x | a=1days")
    with pytest.raises(AssertionError):
        parse_perfdata("POP3 OK - x | a=1 | b=2")


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


def fill(maildir: Maildir) -> None:
    maildir.create()
    for m in MESSAGES:
        maildir.deliver(m)


def start_postie(postie, tmp: Path, cert: Path, key: Path, extra: list[str] | None = None):
    pw = make_passwd(tmp)
    template = str(tmp / "mail" / "%u")
    fill(Maildir(tmp / "mail" / BOB[0]))
    tls_port = free_port()
    s = postie.make(passwd=pw.path, maildir=template,
                    extra=["--tls-cert", str(cert), "--tls-key", str(key),
                           "--listen-tls", f"{HOST}:{tls_port}"] + (extra or []))
    s.start(ready_timeout=15)
    s.wait_log(rf"Listening on 127\.0\.0\.1:{tls_port} ")
    return s, tls_port


def start_dovecot_with(dovecot, leaf_cert: Path | None, leaf_key: Path | None, **kw):
    d = dovecot(users={"alice": "alice-pw", "bob": BOB[1]}, cert=leaf_cert, key=leaf_key, **kw)
    fill(d.maildir("bob"))
    d.fix_ownership()
    return d


def password_file(tmp: Path, password: str) -> Path:
    p = tmp / "check-password"
    p.write_text(password + "\n")
    os.chmod(p, 0o600)
    return p


# --------------------------------------------------------------------------
# Against Postie
# --------------------------------------------------------------------------


def test_postie_all_ok(postie_bin, postie, tmp_path, pki):
    """A well-configured Postie: every item OK, exit 0, perfdata per the guidelines."""
    s, tls_port = start_postie(postie, tmp_path, pki.good.cert, pki.good.key, ["--trusted-network", "none"])
    pwfile = password_file(tmp_path, BOB[1])
    r = run_check(postie_bin, HOST, "--port", s.port, "--tls-port", tls_port, "--ca-file", pki.root.cert,
                  "--user", BOB[0], "--password-file", pwfile)
    assert r.code == 0, r
    assert r.status_line.startswith("POP3 OK - "), r
    perf = r.perfdata
    for label in ("dns", "connect", "greeting", "capa", "stls", "connect_tls", "tls", "login", "time"):
        assert label in perf and perf[label].uom == "s" and perf[label].min == "0", (label, r.status_line)
    assert perf["cert_days"].value in (398, 399, 400), r.status_line
    assert (perf["cert_days"].warn, perf["cert_days"].crit) == ("30:", "7:"), r.status_line
    assert perf["messages"].value == 2 and perf["mailbox_size"].value == MAILBOX_SIZE and perf["mailbox_size"].uom == "B"
    for line in ("commands pipelined after STLS discarded", "TLS 1.0 and 1.1 refused", "no plaintext login before TLS",
                 "certificate chain complete", "login: bob logged in with SCRAM-SHA-256 over STLS"):
        assert re.search(rf"^  OK +{re.escape(line)}", r.stdout, re.M), (line, r.stdout)


def test_postie_json_and_injection(postie_bin, postie, tmp_path, pki):
    """--json is one valid JSON document; Postie discards commands pipelined after STLS;
    USER/PASS offered before TLS (loopback is a trusted network by default) is a WARNING."""
    s, tls_port = start_postie(postie, tmp_path, pki.good.cert, pki.good.key)
    r, doc = run_json(postie_bin, HOST, "--port", s.port, "--tls-port", tls_port, "--ca-file", pki.root.cert)
    assert r.code == 1 and doc["state"] == "WARNING", r
    assert verdict(doc, "pop3.stls_injection") == "OK"
    assert verdict(doc, "pop3.plaintext") == "WARN"
    assert "USER/PASS" in items(doc)["pop3.plaintext"]["detail"]
    assert items(doc)["pop3.plaintext"]["remedy"]
    assert verdict(doc, f"tls.{s.port}.legacy") == "OK"
    assert doc["facts"][f"tls.{s.port}.version"] in ("TLSv1.3", "TLSv1.2")
    assert doc["facts"][f"tls.{tls_port}.chain"][0]["subject"] == "CN=good.test"
    assert doc["status"].startswith("POP3 WARNING - ")
    assert "transcript" not in doc


def test_postie_transcript_hides_password(postie_bin, postie, tmp_path, pki):
    """--transcript: both sides with timings; the password (from POSTIE_PASSWORD) never shows."""
    s, tls_port = start_postie(postie, tmp_path, pki.good.cert, pki.good.key)
    for method in ("USER", "PLAIN", "LOGIN"):
        r = run_check(postie_bin, HOST, "--port", s.port, "--tls-port", tls_port, "--ca-file", pki.root.cert,
                      "--user", BOB[0], "--login-method", method, "--transcript",
                      env={"POSTIE_PASSWORD": BOB[1]})
        assert r.code == 1, r  # the plaintext warning
        assert BOB[1] not in r.stdout and BOB[1] not in r.stderr
        import base64
        for secret in (base64.b64encode(f"\0{BOB[0]}\0{BOB[1]}".encode()).decode(),
                       base64.b64encode(BOB[1].encode()).decode()):
            assert secret not in r.stdout
        transcript = r.stdout.split("Transcript", 1)[1]
        lines = re.findall(r"^ +(\d+\.\d{3}) \[([^\]]+)\] ([CS*]): (.*)$", transcript, re.M)
        assert lines, transcript
        assert ("S", "+OK Logged in.") in [(d, t) for _, _, d, t in lines], transcript
        login = [(d, t) for _, c, d, t in lines if c.startswith("login")]
        if method == "USER":
            assert ("C", f"USER {BOB[0]}") in login and ("C", "PASS <hidden>") in login, login
        else:
            assert ("C", f"AUTH {method}") in login and ("C", "<hidden>") in login, login
        stamps = [float(t) for t, _, _, _ in lines]
        assert stamps == sorted(stamps)


def test_closed_port_is_critical_with_reason(postie_bin):
    closed = free_port()
    r = run_check(postie_bin, HOST, "--port", closed, "--tls-port", "0")
    assert r.code == 2, r
    assert r.status_line.startswith("POP3 CRITICAL - "), r
    assert "connection refused" in r.status_line, r
    assert "remedy:" in r.stdout
    parse_perfdata(r.status_line)
    r2, doc = run_json(postie_bin, HOST, "--port", closed, "--tls-port", free_port())
    assert r2.code == 2 and verdict(doc, "pop3.connect") == "FAIL" and verdict(doc, "pop3s.connect") == "FAIL"


def test_thresholds_and_usage_errors(postie_bin, postie, tmp_path, pki):
    s, tls_port = start_postie(postie, tmp_path, pki.good.cert, pki.good.key, ["--trusted-network", "none"])
    base = [HOST, "--port", s.port, "--tls-port", tls_port, "--ca-file", pki.root.cert,
            "--user", BOB[0]]
    env = {"POSTIE_PASSWORD": BOB[1]}
    r = run_check(postie_bin, *base, "--warning", "cert_days=500", env=env)
    assert r.code == 1 and r.perfdata["cert_days"].warn == "500:", r
    r = run_check(postie_bin, *base, "--warning", "messages=5", "--critical", "messages=1,mailbox_size=10K", env=env)
    assert r.code == 2, r
    assert r.perfdata["messages"].crit == "1" and r.perfdata["mailbox_size"].crit == "10240", r
    r = run_check(postie_bin, *base, "--critical", "messages=@0:0", env=env)  # critical when empty
    assert r.code == 0, r
    # Usage problems are UNKNOWN (exit 3) with one status line.
    for bad in (["--warning", "cert_days"], ["--warning", "nonsense=1"], ["--critical", "connect=fast"],
                ["--no-such-option"], ["--login-method", "NTLM"]):
        r = run_check(postie_bin, *base, *bad, env=env)
        assert r.code == 3 and r.status_line.startswith("POP3 UNKNOWN - "), (bad, str(r))
        r, doc = run_json(postie_bin, *base, *bad, env=env)  # still JSON with --json
        assert doc["state"] == "UNKNOWN" and doc["status"].startswith("POP3 UNKNOWN - "), doc
    r = run_check(postie_bin, HOST, "--port", s.port, "--user", BOB[0])  # no password anywhere
    assert r.code == 3 and "POSTIE_PASSWORD" in r.status_line, r


class VulnerableServer(ScriptedServer):
    """A deliberately broken STLS server: it reads `STLS\\r\\nCAPA\\r\\n` in one go, starts TLS,
    then answers the CAPA it had buffered in plaintext (the CVE-2011-0411 mistake)."""

    greeting = "+OK vulnerable"
    capabilities = ["STLS", "USER"]
    replies = {}

    def __init__(self, cert: Path, key: Path):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        super().__init__(concurrent=True, timeout=10, backlog=8)

    def command(self, s: ScriptedSession, word: str, args: list[str]) -> bool:
        if word == "STLS" and s.tls is None:
            s.reply("+OK go ahead")
            s.starttls(self.ctx, keep_pending=True)  # the bug
            return True
        return super().command(s, word, args)


def test_injection_detected_on_vulnerable_server(postie_bin, pki):
    v = VulnerableServer(pki.good.cert, pki.good.key)
    try:
        r, doc = run_json(postie_bin, HOST, "--port", v.port, "--tls-port", "0", "--ca-file", pki.root.cert)
    finally:
        v.close()
    assert r.code == 2, r
    item = items(doc)["pop3.stls_injection"]
    assert item["verdict"] == "FAIL" and "vulnerable" in item["detail"] and item["remedy"], item


class DowngradingServer(VulnerableServer):
    """An STLS server that speaks TLS 1.2 and 1.3 to the probes, then only TLS 1.0/1.1 to the
    connection after them, the login's: what a man in the middle or a misconfigured pool
    member would do. It records each connection's handshake and every command after it.
    (It borrows VulnerableServer's listener, not its bug.)"""

    # postie check --port P --tls-port 0 on a server refusing TLS < 1.2: the port check, the
    # STLS injection probe, one TLS 1.0/1.1 probe (refused), then the login.
    PROBES = 3

    def __init__(self, cert: Path, key: Path):
        self.handshakes: list[str] = []  # per connection: the version, or "failed: ..."
        self.commands: list[list[str]] = []
        self.lock = threading.Lock()
        super().__init__(cert, key)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.legacy.minimum_version = ssl.TLSVersion.TLSv1
        self.legacy.maximum_version = ssl.TLSVersion.TLSv1_1
        self.legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
        self.legacy.load_cert_chain(cert, key)

    def _session(self, conn):  # replaces the scripted machinery: this server records handshakes
        with self.lock:
            index = len(self.commands)
            self.commands.append([])
            self.handshakes.append("none")
        conn.settimeout(10)
        try:
            conn.sendall(b"+OK downgrading\r\n")
            pending, tls = b"", None
            while True:
                while b"\r\n" not in pending:
                    data = (tls or conn).recv(4096)
                    if not data:
                        return
                    pending += data
                line, pending = pending.split(b"\r\n", 1)
                cmd = line.decode(errors="replace")
                out = tls or conn
                if tls is not None:
                    self.commands[index].append(cmd)
                if cmd.upper() == "CAPA":
                    out.sendall(b"+OK\r\n" + (b"USER\r\nSASL PLAIN\r\n" if tls else b"STLS\r\n") + b".\r\n")
                elif cmd.upper() == "STLS" and tls is None:
                    conn.sendall(b"+OK go ahead\r\n")
                    pending = b""  # never take plaintext bytes as coming over TLS
                    context = self.ctx if index < self.PROBES else self.legacy
                    try:
                        tls = context.wrap_socket(conn, server_side=True)
                    except (OSError, ssl.SSLError) as e:
                        self.handshakes[index] = f"failed: {e}"
                        return
                    self.handshakes[index] = tls.version()
                elif cmd.upper() == "QUIT":
                    out.sendall(b"+OK bye\r\n")
                    return
                else:
                    out.sendall(b"-ERR [AUTH] no\r\n")
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_login_refuses_tls_below_1_2_by_itself(postie_bin, pki):
    """The probes found modern TLS, but the login connection is offered only TLS 1.0/1.1: the
    login refuses the handshake itself (TLS 1.2 at least, as for fetch, bench and migrate) and
    the password is never sent. (Before POP3Client.Configuration it logged in over TLS 1.1.)"""
    s = DowngradingServer(pki.good.cert, pki.good.key)
    try:
        r, doc = run_json(postie_bin, HOST, "--port", s.port, "--tls-port", "0", "--ca-file", pki.root.cert,
                          "--user", "bob", "--login-method", "USER", env={"POSTIE_PASSWORD": BOB[1]})
    finally:
        s.close()
    assert verdict(doc, "pop3.stls") == "OK" and verdict(doc, f"tls.{s.port}.legacy") == "OK", r
    assert len(s.handshakes) == DowngradingServer.PROBES + 1, (s.handshakes, r)
    assert s.handshakes[0] in ("TLSv1.2", "TLSv1.3"), s.handshakes
    assert s.handshakes[-1].startswith("failed"), s.handshakes  # the login's handshake
    login = items(doc)["login"]
    assert login["verdict"] == "FAIL" and "TLS" in login["detail"], login
    assert r.code == 2, r
    assert s.commands[-1] == [], s.commands  # nothing, USER and PASS least of all, went over it
    assert BOB[1] not in r.stdout


# --------------------------------------------------------------------------
# Against Dovecot
# --------------------------------------------------------------------------


def test_dovecot_self_signed(postie_bin, dovecot, pki):
    """Untrusted (self-signed) certificate: CRITICAL without --ca-file; trusted with it."""
    d = start_dovecot_with(dovecot, pki.self_signed.cert, pki.self_signed.key)
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port)
    assert r.code == 2, r
    for port in (d.port, d.tls_port):
        assert verdict(doc, f"tls.{port}.trust") == "FAIL", doc["items"]
        assert "self-signed" in items(doc)[f"tls.{port}.trust"]["detail"]
        assert verdict(doc, f"tls.{port}.chain") == "OK"
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.self_signed.cert)
    assert r.code != 2, r
    for port in (d.port, d.tls_port):
        for what in ("trust", "chain", "validity", "name"):
            assert verdict(doc, f"tls.{port}.{what}") == "OK", (what, doc["items"])
    assert verdict(doc, "pop3.stls_injection") == "OK"  # Dovecot discards them too
    assert not [i for i in doc["items"] if i["verdict"] == "FAIL"], doc["items"]


def test_dovecot_expired_certificate(postie_bin, dovecot, pki):
    d = start_dovecot_with(dovecot, pki.expired.cert, pki.expired.key)
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.code == 2, r
    for port in (d.port, d.tls_port):
        item = items(doc)[f"tls.{port}.validity"]
        assert item["verdict"] == "FAIL" and "expired" in item["detail"] and "Renew" in item["remedy"], item
        assert verdict(doc, f"tls.{port}.trust") == "OK"  # the CA is right; only the dates are not
    assert doc["facts"]["cert_days"] in (-2, -3)
    r = run_check(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.perfdata["cert_days"].value in (-2, -3), r.status_line


def test_dovecot_incomplete_chain(postie_bin, dovecot, pki):
    """A leaf signed by an intermediate the server does not send: CRITICAL; with the full chain configured: OK."""
    d = start_dovecot_with(dovecot, pki.chained.cert, pki.chained.key)
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.code == 2, r
    item = items(doc)[f"tls.{d.port}.chain"]
    assert item["verdict"] == "FAIL" and "incomplete" in item["detail"] and "Intermediate" in item["detail"], item
    assert verdict(doc, f"tls.{d.port}.trust") == "INFO"  # one problem, reported once
    assert "fullchain" in item["remedy"]
    d.stop()
    d2 = start_dovecot_with(dovecot, pki.chained_full, pki.chained.key)
    r, doc = run_json(postie_bin, d2.host, "--port", d2.port, "--tls-port", d2.tls_port, "--ca-file", pki.root.cert)
    assert r.code != 2, r
    assert verdict(doc, f"tls.{d2.port}.chain") == "OK" and verdict(doc, f"tls.{d2.port}.trust") == "OK"
    assert "2 certificates" in items(doc)[f"tls.{d2.port}.chain"]["detail"]


def test_dovecot_without_stls(postie_bin, dovecot):
    """ssl = no: no STLS and nothing on 995: CRITICAL; USER offered in plaintext: WARN."""
    d = start_dovecot_with(dovecot, None, None)
    closed = free_port()
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", closed)
    assert r.code == 2, r
    assert verdict(doc, "pop3.stls") == "FAIL" and "no STLS" in items(doc)["pop3.stls"]["detail"]
    assert verdict(doc, "pop3.plaintext") == "WARN"
    assert "connection refused" in items(doc)["pop3s.connect"]["detail"]
    r = run_check(postie_bin, d.host, "--port", d.port, "--tls-port", "0")
    assert r.code == 2 and "no STLS" in r.status_line, r


def test_dovecot_tls10_still_enabled(postie_bin, dovecot, pki):
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key, ssl_min_protocol="TLSv1",
                           ssl_cipher_list="DEFAULT@SECLEVEL=0")
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.code == 1, r
    for port in (d.port, d.tls_port):
        item = items(doc)[f"tls.{port}.legacy"]
        assert item["verdict"] == "WARN" and "ssl_min_protocol" in item["remedy"], item
        # Offered 1.0 and 1.1, Dovecot picks 1.1; offered 1.0 alone, it takes that too.
        assert [v.split()[0] for v in doc["facts"][f"tls.{port}.legacy.accepted"]] == ["TLSv1.1", "TLSv1"], item
    # the normal handshake still negotiates the best version
    assert doc["facts"][f"tls.{d.port}.version"] == "TLSv1.3"


def test_dovecot_plaintext_login_warning(postie_bin, dovecot, pki):
    """Dovecot offering USER and SASL PLAIN/LOGIN before TLS: WARNING, everything else OK."""
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key)
    r = run_check(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.code == 1 and r.status_line.startswith("POP3 WARNING - no plaintext login before TLS"), r
    assert re.search(r"^  WARN +no plaintext login before TLS .*USER/PASS and SASL PLAIN and SASL LOGIN", r.stdout, re.M), r
    assert "disable_plaintext_auth" in r.stdout
    parse_perfdata(r.status_line)


@pytest.mark.parametrize("method", ["USER", "APOP", "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256",
                                    "auto"])
def test_dovecot_login_each_method(postie_bin, dovecot, pki, tmp_path, method):
    """The client library against Dovecot: STLS, CAPA before/after TLS and after login, each
    mechanism, STAT, NOOP+STAT pipelined (Dovecot offers PIPELINING), LIST, UIDL, TOP, QUIT."""
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key,
                           auth_mechanisms="plain login cram-md5 scram-sha-1 scram-sha-256 apop")
    pw = password_file(tmp_path, BOB[1])
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert,
                      "--user", "bob", "--password-file", pw, "--login-method", method, "--transcript")
    assert r.code == 1, r  # only the plaintext warning
    login = items(doc)["login"]
    expect = "SCRAM-SHA-256" if method == "auto" else method
    assert login["verdict"] == "OK" and f"with {expect} over STLS" in login["detail"], login
    assert doc["facts"]["messages"] == 2 and doc["facts"]["mailbox_size"] == MAILBOX_SIZE
    assert verdict(doc, "mailbox") == "OK"
    sent = [t["text"] for t in doc["transcript"] if t["connection"].startswith("login") and t["direction"] == "C"]
    assert "NOOP" in sent and "TOP 1 0" in sent and "UIDL" in sent and sent[-1] == "QUIT", sent
    if method == "APOP":
        assert "APOP bob <hidden>" in sent, sent
    assert BOB[1] not in r.stdout


def test_dovecot_login_over_995(postie_bin, dovecot, pki, tmp_path):
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key)
    pw = password_file(tmp_path, BOB[1])
    r, doc = run_json(postie_bin, d.host, "--port", "0", "--tls-port", d.tls_port, "--ca-file", pki.root.cert,
                      "--user", "bob", "--password-file", pw)
    assert r.code == 0, r
    assert f"over TLS on port {d.tls_port}" in items(doc)["login"]["detail"]
    assert doc["facts"]["messages"] == 2


def test_dovecot_login_errors(postie_bin, dovecot, pki, tmp_path):
    """[AUTH] for a wrong password (CRITICAL); [IN-USE] while another session holds the
    mailbox (WARNING, Dovecot with pop3_lock_session = yes); no login over untrusted TLS."""
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key, extra_conf="protocol pop3 {\n  pop3_lock_session = yes\n}\n")
    base = [d.host, "--port", d.port, "--tls-port", "0", "--ca-file", pki.root.cert, "--user", "bob"]
    r, doc = run_json(postie_bin, *base, "--login-method", "PLAIN", env={"POSTIE_PASSWORD": "wrong-password"})
    assert r.code == 2 and verdict(doc, "login") == "FAIL", r
    assert "[AUTH]" in items(doc)["login"]["detail"], items(doc)["login"]

    holder = poplib.POP3(d.host, d.port, timeout=10)
    try:
        holder.user("bob")
        holder.pass_(BOB[1])
        # Dovecot waits about 10 s for the lock before it answers [IN-USE].
        r, doc = run_json(postie_bin, *base, "--timeout", "30", env={"POSTIE_PASSWORD": BOB[1]})
    finally:
        holder.quit()
    assert verdict(doc, "login") == "WARN" and "[IN-USE]" in items(doc)["login"]["detail"], items(doc)["login"]
    assert r.code == 1, r

    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", "0", "--user", "bob",
                      env={"POSTIE_PASSWORD": BOB[1]})  # no --ca-file: the test CA is not trusted
    assert r.code == 2 and verdict(doc, "login") == "UNKNOWN" and "not attempted" in items(doc)["login"]["detail"]


class BrokenServer(ScriptedServer):
    """Answers every connection with `greeting`, then `+OK` to CAPA (listing STLS) and to STLS,
    and closes instead of starting TLS: a misconfigured server whose STLS is advertised but broken."""

    capabilities = ["STLS", "USER"]
    replies = {}
    unknown = "+OK"

    def __init__(self, greeting: str, hang: float = 0):
        self.greeting = greeting
        self.hang = hang  # seconds to stay silent after +OK to STLS before closing
        super().__init__(timeout=5, backlog=8)

    def command(self, s: ScriptedSession, word: str, args: list[str]) -> bool:
        if word == "STLS":
            s.reply("+OK")
            s.sock.recv(4096)  # the ClientHello, never answered
            time.sleep(self.hang)
            return False
        return super().command(s, word, args)


def test_broken_stls_and_bad_greeting(postie_bin):
    s = BrokenServer("+OK hello")
    try:
        r, doc = run_json(postie_bin, HOST, "--port", s.port, "--tls-port", "0")
    finally:
        s.close()
    assert r.code == 2, r
    item = items(doc)["pop3.stls"]
    assert item["verdict"] == "FAIL" and item["detail"].startswith("STLS failed") and item["remedy"], item
    assert "pop3.stls_injection" not in items(doc)  # meaningless when STLS itself fails
    assert "pop3.capa" in items(doc) and verdict(doc, "pop3.plaintext") == "WARN"
    s = BrokenServer("-ERR too busy")
    try:
        r, doc = run_json(postie_bin, HOST, "--port", s.port, "--tls-port", "0")
    finally:
        s.close()
    assert r.code == 2 and verdict(doc, "pop3.greeting") == "FAIL", r
    assert "too busy" in items(doc)["pop3.greeting"]["detail"]
    assert "pop3.stls" not in items(doc)  # no second complaint about a server that never got that far


def test_silent_server_times_out(postie_bin):
    """A server that never answers the ClientHello: the handshake gives up after --timeout."""
    s = BrokenServer("+OK hello", hang=10)
    try:
        r, doc = run_json(postie_bin, HOST, "--port", s.port, "--tls-port", "0", "--timeout", "3")
    finally:
        s.close()
    assert r.code == 2, r
    assert "timed out after 3 s during the TLS handshake" in items(doc)["pop3.stls"]["detail"], items(doc)["pop3.stls"]
