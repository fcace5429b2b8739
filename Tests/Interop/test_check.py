"""`postie check HOST` against `postie serve` and scripted servers: the verdicts on a sound
server, a closed port, thresholds and usage errors, the STLS-injection test against a safe
server and a deliberately vulnerable one, a login refusing TLS below 1.2 by itself, perfdata
checked against the monitoring-plugins grammar, --json, and --transcript with the password
hidden. Against Dovecot: test_check_dovecot.py."""

from __future__ import annotations

import re
import ssl
import threading
from pathlib import Path

import pytest

from kits.check import (  # noqa: F401 - pki is a fixture
    MAILBOX_SIZE, items, parse_perfdata, password_file, pki, run_check, run_json, start_postie, verdict,
)
from kits.launcher import free_port, HOST
from kits.mail import BOB
from kits.scripted import ScriptedServer, ScriptedSession


def test_perfdata_parser_rejects_malformed():
    """The parser itself: a value with a unit the guidelines do not know, or two '|'."""
    assert parse_perfdata("POP3 OK - x | 'a b'=1.5s;1;2;0 c=3;@1:2;~:4")["a b"].value == 1.5
    with pytest.raises(AssertionError):
        parse_perfdata("POP3 OK - x | a=1days")
    with pytest.raises(AssertionError):
        parse_perfdata("POP3 OK - x | a=1 | b=2")


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
