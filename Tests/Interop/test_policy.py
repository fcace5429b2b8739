"""Security policy: plaintext-login rules (RFC 2595 section 2.1 / Dovecot's
disable_plaintext_auth), --require-tls, brute-force slow-down and lockout with the fail2ban
filter in contrib/, access lists, per-IP connection limits, the PROXY protocol and --run-as.

Client source addresses 127.0.0.2 ... 127.0.0.9 stand for different hosts: on Linux every
address in 127.0.0.0/8 is local, so a client socket can bind to one before connecting."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import note
from kits.launcher import free_port, HOST, PostieServer
from kits.mail import ALICE, BOB, canonical_crlf, Maildir, make_passwd
from kits.pop3 import POP3Raw, received_until_close
from kits.tls import (
    client_context,
    proc_ids,
    proxy_v1,
    proxy_v2,
    PROXY_V2_SIGNATURE,
    start_tls_server,
    thread_ids,
)
from kits.tools import curl

REPO = Path(__file__).resolve().parents[2]
# POSTIE_FAIL2BAN_FILTER tries a candidate filter instead (a filter.d/postie.conf with common.conf beside it).
FILTER = Path(os.environ.get("POSTIE_FAIL2BAN_FILTER", REPO / "contrib" / "fail2ban" / "filter.d" / "postie.conf"))
PLAINTEXT_REFUSED = "-ERR [AUTH] Plaintext authentication disallowed"
LOCKED_OUT = "-ERR [SYS/TEMP] Too many failed logins from your IP address; try again later."


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
        assert c.cmd("NOOP").startswith("+OK")
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


# --------------------------------------------------------------------------
# 5. Brute force: slowed, locked out; the real user is not; fail2ban sees every failure
# --------------------------------------------------------------------------

BF_CONFIG = """\
auth_failure_delay: 0.05
auth_failure_max_delay: 0.2
lockout_threshold: 30
lockout_window: 300
lockout_duration: 600
"""
BF_THRESHOLD = 30
FLOOD_THREADS = 8
FLOOD_SECONDS = 10.0
FLOOD_MAX_SECONDS = 120.0
FLOOD_ATTEMPTS = 3000
ATTACKER = "127.0.0.2"
REAL_USER_IP = "127.0.0.3"


@dataclass
class Flood:
    server: PostieServer
    port: int
    first_failure: float = 0.0
    auth_failed: list = field(default_factory=list)  # (start, latency)
    locked_at_pass: int = 0
    refused_at_connect: int = 0
    final_refusals: int = 0
    unexpected: list = field(default_factory=list)
    real_logins: list = field(default_factory=list)  # latencies of the real user's logins
    real_errors: list = field(default_factory=list)
    duration: float = 0.0
    lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Flood({self.attempts} attempts, {len(self.auth_failed)} auth failures, "
                f"{self.locked_at_pass} locked at PASS, {self.refused_at_connect} refused)")

    @property
    def attempts(self) -> int:
        return 1 + len(self.auth_failed) + self.locked_at_pass + self.refused_at_connect

    @property
    def expected_fail2ban_matches(self) -> int:
        """One log line per failed PASS (auth failed, or locked out) and one per refused connection."""
        return 1 + len(self.auth_failed) + self.locked_at_pass + self.refused_at_connect + self.final_refusals


def _attacker(fl: Flood, idx: int, stop: threading.Event) -> None:
    k = 0
    while not stop.is_set():
        try:
            c = POP3Raw(HOST, fl.port, source=ATTACKER, read_greeting=False, timeout=15)
        except OSError as e:
            with fl.lock:
                fl.unexpected.append(f"connect: {e}")
            time.sleep(0.01)
            continue
        try:
            g = c.reply()
            if g == LOCKED_OUT:
                c.expect_closed()
                with fl.lock:
                    fl.refused_at_connect += 1
                if fl.attempts >= FLOOD_ATTEMPTS:
                    stop.set()
                continue
            if not g.startswith("+OK"):
                with fl.lock:
                    fl.unexpected.append(f"greeting {g!r}")
                continue
            for _ in range(5):
                k += 1
                user = ALICE[0] if k % 3 else f"nosuchuser{idx}x{k}"  # unknown users count too
                r = c.cmd(f"USER {user}")
                if not r.startswith("+OK"):
                    with fl.lock:
                        fl.unexpected.append(f"USER got {r!r}")
                    break
                t0 = time.monotonic()
                r = c.cmd(f"PASS wrong-{idx}-{k}")
                dt = time.monotonic() - t0
                if r.startswith("-ERR [AUTH]"):
                    with fl.lock:
                        fl.auth_failed.append((t0, dt))
                elif r == LOCKED_OUT:
                    c.expect_closed()
                    with fl.lock:
                        fl.locked_at_pass += 1
                    break
                else:
                    with fl.lock:
                        fl.unexpected.append(f"PASS got {r!r}")
                    break
        except (EOFError, OSError, AssertionError) as e:
            with fl.lock:
                fl.unexpected.append(f"{type(e).__name__}: {e}")
        finally:
            c.close()


def _real_user(fl: Flood, stop: threading.Event) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            with POP3Raw(HOST, fl.port, source=REAL_USER_IP, timeout=15) as c:
                c.ok(f"USER {ALICE[0]}")
                r = c.cmd(f"PASS {ALICE[1]}")
                dt = time.monotonic() - t0
                if r.startswith("+OK"):
                    fl.real_logins.append(dt)
                    c.ok("QUIT")
                else:
                    fl.real_errors.append(f"{r!r} after {dt:.3f}s")
        except Exception as e:  # noqa: BLE001 - recorded and asserted on
            fl.real_errors.append(f"{type(e).__name__}: {e}")
        stop.wait(0.1)


@pytest.fixture(scope="module")
def flood(postie_bin, tmp_path_factory) -> Flood:
    tmp = tmp_path_factory.mktemp("bruteforce")
    pw = make_passwd(tmp)
    Maildir(tmp / "mail" / "alice").create().deliver(b"Subject: for the real user\n\nhi\n")
    cfg = tmp / "postie.yaml"
    cfg.write_text(BF_CONFIG)
    port = free_port()
    args = ["serve", "--listen", f"{HOST}:{port}", "--passwd-file", str(pw.path),
            "--maildir", str(tmp / "mail" / "%u"), "--config", str(cfg)]
    s = PostieServer(postie_bin, args, tmp / "bruteforce.log", [(HOST, port)], cwd=tmp,
                     env=dict(os.environ, HOME=str(tmp)), name="bruteforce")
    s.start()
    fl = Flood(s, port)
    try:
        # One failure alone first: the delay it gets is the initial one.
        with POP3Raw(HOST, port, source=ATTACKER) as c:
            c.ok(f"USER {ALICE[0]}")
            t0 = time.monotonic()
            r = c.cmd("PASS first-wrong")
            fl.first_failure = time.monotonic() - t0
            assert r.startswith("-ERR [AUTH]"), f"first wrong password got {r!r}"
        stop = threading.Event()
        threads = [threading.Thread(target=_attacker, args=(fl, i, stop), daemon=True) for i in range(FLOOD_THREADS)]
        real = threading.Thread(target=_real_user, args=(fl, stop), daemon=True)
        t0 = time.monotonic()
        for t in threads:
            t.start()
        real.start()
        # At least FLOOD_SECONDS, and on a slow machine until enough happened to judge (at most
        # FLOOD_MAX_SECONDS): the figures below count events, they do not time them.
        while not stop.wait(0.2):
            ran = time.monotonic() - t0
            if ran >= FLOOD_MAX_SECONDS or (ran >= FLOOD_SECONDS and fl.attempts >= 1000 and fl.refused_at_connect >= 500):
                break
        stop.set()
        for t in threads + [real]:
            t.join(30)
        fl.duration = time.monotonic() - t0
        # After the flood the attacker is still refused at once, with the clear message.
        with POP3Raw(HOST, port, source=ATTACKER, read_greeting=False) as c:
            g = c.reply()
            fl.final_refusals += 1
            assert g == LOCKED_OUT, f"a locked-out address got {g!r} instead of the refusal"
            assert c.expect_closed() == b""
        # ...and the real user still gets in.
        t1 = time.monotonic()
        with POP3Raw(HOST, port, source=REAL_USER_IP) as c:
            c.login(*ALICE)
            fl.real_logins.append(time.monotonic() - t1)
            c.ok("QUIT")
        s.wait_log(r"Disconnected: Logged out", count=len(fl.real_logins))
        note(f"brute force: {fl.attempts} attempts from {ATTACKER} in {fl.duration:.1f}s: "
             f"{1 + len(fl.auth_failed)} auth failures, {fl.locked_at_pass} locked out at PASS, "
             f"{fl.refused_at_connect} connections refused; first failure answered in {fl.first_failure:.3f}s; "
             f"real user's {len(fl.real_logins)} logins took at most {max(fl.real_logins):.3f}s")
        yield fl
    finally:
        s.stop()


def test_brute_force_is_slowed_then_locked_out(flood, request):
    request.node._postie_servers = [flood.server]
    fl = flood
    assert not fl.unexpected, f"unexpected replies/errors during the flood: {fl.unexpected[:5]}"
    assert fl.attempts >= 1000, f"only {fl.attempts} attempts in {fl.duration:.1f}s: the flood did not run"
    # Slowed: the first failure waits ~auth_failure_delay (0.05 s); later ones ~max (0.2 s).
    late = sorted(fl.auth_failed)[FLOOD_THREADS:]
    assert late, f"too few auth failures to measure: {len(fl.auth_failed)}"
    late_median = statistics.median(dt for _, dt in late)
    # Lower bounds only: a busy machine makes every reply slower, never faster.
    assert fl.first_failure >= 0.05, f"the first failure took {fl.first_failure:.3f}s; configured delay is 0.05 s"
    assert late_median >= 0.15 and late_median >= fl.first_failure + 0.075, (
        f"failures did not get slower: first {fl.first_failure:.3f}s, later median {late_median:.3f}s "
        f"(auth_failure_max_delay 0.2 s)")
    # Locked out: after lockout_threshold failures the address is refused.
    assert fl.locked_at_pass + fl.refused_at_connect > 0, "the attacker was never locked out"
    n_fail = 1 + len(fl.auth_failed)
    assert BF_THRESHOLD - 1 <= n_fail <= BF_THRESHOLD - 1 + FLOOD_THREADS, (
        f"{n_fail} passwords were checked before the lockout; lockout_threshold is {BF_THRESHOLD} "
        f"(at most {FLOOD_THREADS} more can be in flight)")
    assert fl.refused_at_connect >= 500, f"only {fl.refused_at_connect} refused connections after the lockout"
    # The server's own account agrees with what the clients saw.
    s = fl.server
    assert len(s.log_lines(rf"Login failed: .*rip={re.escape(ATTACKER)},")) == n_fail + fl.locked_at_pass
    assert len(s.log_lines(rf"Connection refused, locked out after failed logins: rip={re.escape(ATTACKER)},")) \
        == fl.refused_at_connect + fl.final_refusals


def test_brute_force_does_not_slow_the_real_user(flood, request):
    request.node._postie_servers = [flood.server]
    fl = flood
    assert not fl.real_errors, f"the real user failed during the flood: {fl.real_errors[:5]}"
    assert len(fl.real_logins) >= 5, f"only {len(fl.real_logins)} real-user logins during a {fl.duration:.1f}s flood"
    # The attacker's delay (up to 0.2 s per failure, and then a refusal) must not reach the real
    # user; the bound is loose because the flood itself loads the machine.
    slow = [round(t, 3) for t in fl.real_logins if t >= 5.0]
    assert not slow, f"real-user logins from {REAL_USER_IP} took >= 5 s during the flood: {slow}"
    assert not fl.server.log_lines(rf"Login failed: .*rip={re.escape(REAL_USER_IP)},")


def fail2ban_regex(log: Path, filt: Path, *extra: str) -> subprocess.CompletedProcess:
    exe = shutil.which("fail2ban-regex")
    assert exe, "fail2ban-regex is missing (Debian package fail2ban)"
    return subprocess.run([exe, *extra, str(log), str(filt)], capture_output=True, timeout=120)


def test_fail2ban_filter_matches_every_failure_and_no_success(flood, request):
    request.node._postie_servers = [flood.server]
    fl = flood
    r = fail2ban_regex(fl.server.log_path, FILTER, "--print-all-matched", "--print-no-missed")
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, f"fail2ban-regex exit {r.returncode}: {r.stderr.decode()[-2000:]}"
    m = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", out, re.M)
    assert m, f"cannot parse fail2ban-regex output:\n{out[-2000:]}"
    matched = int(m.group(3))
    sample = [l for l in fl.server.log_text().splitlines() if "Login failed" in l][:1]
    assert matched == fl.expected_fail2ban_matches, (
        f"fail2ban-regex matched {matched} lines of {fl.server.log_path}; the clients saw "
        f"{fl.expected_fail2ban_matches} failures (failed PASS + refused connections). "
        f"A failure line: {sample}")
    matched_lines = re.findall(r"^\|\s+(\S.*)$", out.split("Matched line(s):", 1)[-1], re.M)
    assert not [l for l in matched_lines if "Info: Login: " in l], "the filter matched a successful login"
    hosts = set(re.findall(r"rip=([0-9a-f.:]+),", "\n".join(matched_lines)))
    assert hosts <= {ATTACKER}, f"the filter matched failures of other hosts: {hosts}"


JOURNAL_CHECK = r"""
import datetime, sys
sys.path.insert(0, "/usr/lib/python3/dist-packages")
from fail2ban.client.filterreader import FilterReader
from fail2ban.server.filter import FileFilter
basedir, logfile = sys.argv[1], sys.argv[2]
reader = FilterReader("postie", "postie", {}, share_config={}, basedir=basedir)
reader.read(); reader.getOptions({})
f = FileFilter(None)
for opt in reader.convert():
    if opt[0] == "multi-set" and opt[2] == "addfailregex":
        for rx in opt[3]:
            f.addFailRegex(rx)
n = 0
for line in open(logfile, encoding="utf-8", errors="replace"):
    line = line.rstrip("\n")
    if " postie[" not in line:
        continue
    # What the systemd backend hands the filter (filtersystemd.formatJournalEntry):
    # "_HOSTNAME SYSLOG_IDENTIFIER[PID]: MESSAGE", the MESSAGE being Postie's whole stderr line.
    msg = "host postie[%s]: %s" % (line.split("postie[", 1)[1].split("]", 1)[0], line)
    if f.processLine(("", "2026-01-01 00:00:00 ", msg), datetime.datetime.now().timestamp()):
        n += 1
print(n)
"""


def test_fail2ban_filter_matches_journal_lines(flood, request):
    """contrib/fail2ban/jail.d/postie.conf reads the journal (backend = systemd); there
    fail2ban sees `host postie[PID]: <Postie's stderr line, timestamp included>`."""
    request.node._postie_servers = [flood.server]
    py = "/usr/bin/python3"
    probe = subprocess.run([py, "-c", "import sys; sys.path.insert(0, '/usr/lib/python3/dist-packages'); import fail2ban"],
                           capture_output=True)
    assert probe.returncode == 0, f"fail2ban's Python modules are missing: {probe.stderr.decode()}"
    r = subprocess.run([py, "-c", JOURNAL_CHECK, str(FILTER.parent.parent), str(flood.server.log_path)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, f"journal check failed: {r.stderr.decode()[-2000:]}"
    matched = int(r.stdout.decode().strip().splitlines()[-1])
    assert matched == flood.expected_fail2ban_matches, (
        f"with the journal backend the filter matches {matched} of {flood.expected_fail2ban_matches} failure lines")


# --------------------------------------------------------------------------
# 7. Access lists and connection limits
# --------------------------------------------------------------------------


def expect_silent_close(port: int, source: str) -> None:
    data = received_until_close(port, source=source)
    assert data == b"", f"a denied client ({source}) received {data[:100]!r}; it must get no greeting"


def expect_greeting(port: int, source: str) -> None:
    with POP3Raw(HOST, port, source=source, read_greeting=False) as c:
        g = c.reply()
        assert g.startswith("+OK"), f"{source} got {g!r}"
        c.ok("QUIT")


def test_deny_and_allow_before_the_greeting(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, listen_opts="deny=127.0.0.2",
                           extra_listens={"allow": "allow=127.0.0.6/32"},
                           extra=["--deny", "127.0.0.5"])
    factory_port = srv.server.port  # a listener without its own list: the global --deny applies
    expect_silent_close(srv.plain, "127.0.0.2")
    expect_greeting(srv.plain, "127.0.0.1")
    expect_greeting(srv.plain, "127.0.0.5")  # the listener's own list replaces the global one
    expect_silent_close(factory_port, "127.0.0.5")
    expect_greeting(factory_port, "127.0.0.2")
    expect_greeting(srv.extra_ports["allow"], "127.0.0.6")
    expect_silent_close(srv.extra_ports["allow"], "127.0.0.7")
    for ip in ("127.0.0.2", "127.0.0.5", "127.0.0.7"):
        assert srv.server.log_lines(rf"Connection refused by access list: rip={re.escape(ip)},"), \
            f"no access-list refusal logged for {ip}"
    # A denied client cannot talk its way in: bytes sent at once are not answered either.
    assert received_until_close(srv.plain, b"CAPA\r\nUSER alice\r\n", source="127.0.0.2") == b""


def test_max_connections_per_ip(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, extra=["--max-connections-per-ip", "2"])
    ip = "127.0.0.4"
    c1 = POP3Raw(HOST, srv.plain, source=ip)
    c2 = POP3Raw(HOST, srv.plain, source=ip)
    try:
        assert c1.greeting.startswith(b"+OK") and c2.greeting.startswith(b"+OK")
        with POP3Raw(HOST, srv.plain, source=ip, read_greeting=False) as c3:
            g = c3.reply()
            assert g.startswith("-ERR [SYS/TEMP] Too many connections from your IP address"), \
                f"the third connection from {ip} got {g!r}"
            assert c3.expect_closed() == b"", "the refused connection was not closed"
        expect_greeting(srv.plain, "127.0.0.8")  # other addresses are not affected
        assert c1.cmd("NOOP").startswith("+OK") and c2.cmd("NOOP").startswith("+OK")
        c1.ok("QUIT")
        c1.close()
        deadline = time.monotonic() + 30
        while True:  # the slot frees once the server has closed c1
            with POP3Raw(HOST, srv.plain, source=ip, read_greeting=False) as c4:
                g = c4.reply()
                if g.startswith("+OK"):
                    c4.ok("QUIT")
                    break
            assert time.monotonic() < deadline, f"after closing one connection, a new one still gets {g!r}"
            time.sleep(0.1)
    finally:
        c1.close()
        c2.close()
    assert srv.server.log_lines(rf"per-IP connection limit reached: rip={re.escape(ip)},")


# --------------------------------------------------------------------------
# 8. PROXY protocol
# --------------------------------------------------------------------------


def test_proxy_protocol_v1_and_v2_from_a_trusted_proxy(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False,
                           extra_listens={"proxy": "proxy deny=198.51.100.66"},
                           extra=["--proxy-from", "127.0.0.1/32", "--trusted-network", "203.0.113.0/24"])
    port = srv.extra_ports["proxy"]
    ctx = client_context(pki.cafile)

    def via_proxy(header: bytes) -> POP3Raw:
        c = POP3Raw(HOST, port, read_greeting=False)
        c.sock.settimeout(0.3)
        try:
            early = c.sock.recv(100)
        except socket.timeout:
            early = b""
        c.sock.settimeout(10)
        assert early == b"", f"the server spoke before the PROXY header: {early!r}"
        c.send(header)
        c.greeting = c.readline()
        assert c.greeting.startswith(b"+OK"), f"after {header[:40]!r}: {c.greeting!r}"
        return c

    # v1 from an untrusted client address: plaintext login refused (the header's address
    # decides), STLS works.
    with via_proxy(proxy_v1("198.51.100.7", "192.0.2.1", 40001, 110)) as c:
        assert c.cmd(f"USER {ALICE[0]}").startswith(PLAINTEXT_REFUSED)
        c.ok("STLS")
        c.starttls(ctx)
        c.login(*ALICE)
        c.ok("QUIT")
    # v2 IPv4 from a trusted network: plaintext login allowed.
    with via_proxy(proxy_v2("203.0.113.9", "192.0.2.1", 40002, 110)) as c:
        c.login(*BOB)
        c.ok("QUIT")
    # v2 IPv6.
    with via_proxy(proxy_v2("2001:db8::7", "2001:db8::1", 40003, 110)) as c:
        c.ok("STLS")
        c.starttls(ctx)
        c.login(*BOB)
        c.ok("QUIT")
    # v2 LOCAL (the proxy's own health check): the peer's address is used.
    with via_proxy(proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0x0)) as c:
        c.ok("QUIT")
    srv.server.wait_log(r"Disconnected: Logged out", count=3)
    for ip, user in (("198.51.100.7", "alice"), ("203.0.113.9", "bob"), ("2001:db8::7", "bob")):
        lines = srv.server.log_lines(rf"Login: user=<{user}>, method=USER, rip={re.escape(ip)}, ")
        assert lines, f"no login logged with rip={ip} (the PROXY header's address)"
    # Access control uses the proxied address too.
    assert received_until_close(port, proxy_v1("198.51.100.66", "192.0.2.1", 40004, 110)) == b"", \
        "a denied client behind the proxy got a greeting"
    # A PROXY header on a listener without `proxy` is just a bad command from the peer.
    with POP3Raw(HOST, srv.plain) as c:
        r = c.cmd(proxy_v1("192.0.2.99", "192.0.2.1", 1, 2).decode().rstrip("\r\n"))
        assert r.startswith("-ERR"), f"PROXY line on a plain listener got {r!r}"
    assert not srv.server.log_lines(r"rip=192\.0\.2\.99"), "a plain listener honoured a PROXY header"


def test_proxy_protocol_v1_valid_edge_forms(postie, tmp_path, pki):
    """Valid v1 headers from HAProxy's proxy-protocol.txt section 2.1 that must be accepted:
    `PROXY UNKNOWN\\r\\n` (the proxy cannot tell the client's address; use the peer's) and
    single-digit ports ("a 16-bit unsigned integer expressed in decimal, 0 to 65535")."""
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, extra_listens={"proxy": "proxy"},
                           extra=["--proxy-from", "127.0.0.1/32"])
    port = srv.extra_ports["proxy"]
    headers = {
        "UNKNOWN": b"PROXY UNKNOWN\r\n",
        "UNKNOWN with addresses": b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        "one-digit destination port": b"PROXY TCP4 198.51.100.21 192.0.2.1 40001 1\r\n",
        "one-digit source port": b"PROXY TCP4 198.51.100.22 192.0.2.1 7 110\r\n",
    }
    problems = []
    for label, header in headers.items():
        with POP3Raw(HOST, port, read_greeting=False, timeout=5) as c:
            c.send(header)
            try:
                got = c.sock.recv(200)
            except (socket.timeout, ConnectionResetError):
                got = b""
        if not got.startswith(b"+OK"):
            problems.append(f"{label} ({header!r}) got {got!r}")
    refusals = srv.server.log_lines(r"malformed PROXY protocol header")
    assert not problems, "valid PROXY v1 headers refused: " + "; ".join(problems) + f"; log: {refusals}"
    assert srv.server.log_lines(r"rip=198\.51\.100\.21,")


MALFORMED = {
    "bad v1 address": b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n",
    "v1 without CRLF": b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\n",
    "v1 too long": b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
    "v1 wrong family": b"PROXY TCP6 192.0.2.1 127.0.0.1 1 2\r\n",
    "v1 bad port": b"PROXY TCP4 192.0.2.1 127.0.0.1 70000 2\r\n",
    "no header": b"USER alice\r\n",
    "http": b"GET / HTTP/1.0\r\n\r\n",
    "v2 bad version": PROXY_V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),
    "v2 bad family": PROXY_V2_SIGNATURE + b"\x21\x99\x00\x0c" + bytes(12),
    "v2 short addresses": PROXY_V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),
}


def test_proxy_protocol_untrusted_and_malformed_headers_are_refused(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, extra_listens={"proxy": "proxy"},
                           extra=["--proxy-from", "127.0.0.9/32"])
    port = srv.extra_ports["proxy"]
    # From 127.0.0.1, not a trusted proxy: closed with no greeting, header or not.
    for header in (proxy_v1("198.51.100.7", "192.0.2.1", 40001, 110), proxy_v2("198.51.100.7", "192.0.2.1", 1, 2)):
        got = received_until_close(port, header, source="127.0.0.1")
        assert got == b"", f"an untrusted peer's PROXY header was answered: {got[:100]!r}"
    assert not srv.server.log_lines(r"rip=198\.51\.100\.7,"), "the untrusted header's address was used"
    # From the trusted proxy: a good header works, malformed ones are refused.
    with POP3Raw(HOST, port, source="127.0.0.9", read_greeting=False) as c:
        c.send(proxy_v1("198.51.100.8", "192.0.2.1", 40002, 110))
        assert c.reply().startswith("+OK")
        c.ok("QUIT")
    srv.server.wait_log(r"rip=198\.51\.100\.8,")
    for label, header in MALFORMED.items():
        got = received_until_close(port, header, source="127.0.0.9")
        assert got == b"", f"malformed PROXY header ({label}) was answered with {got[:100]!r}"
    assert srv.server.alive()


# --------------------------------------------------------------------------
# 9. --run-as
# --------------------------------------------------------------------------

RUN_AS_USER = "postietest"


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", name], capture_output=True)
        assert r.returncode == 0, f"useradd {name}: {r.stderr.decode()}"
        return pwd.getpwnam(name)


def privileged_free_port() -> int:
    for p in range(1023, 900, -1):
        with socket.socket() as s:
            try:
                s.bind((HOST, p))
                return p
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


def test_run_as_drops_root_and_serves_mail(postie, tmp_path, pki):
    assert os.geteuid() == 0, "this test starts the server as root"
    user = ensure_user(RUN_AS_USER)
    uid, gid = user.pw_uid, user.pw_gid
    # Outside pytest's 0700 temp tree, so that the unprivileged user can reach it.
    base = Path(tempfile.mkdtemp(prefix="postie-runas-"))
    try:
        os.chmod(base, 0o755)
        pw = make_passwd(base)
        mail = base / "mail"
        md = Maildir(mail / "alice").create()
        msg = b"From: a@example.org\nSubject: run-as\n\n.dotted\nbody\n"
        md.deliver(msg)
        for root, dirs, files in os.walk(base):
            for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.chown(n, uid, gid)
        os.chmod(pw.path, 0o600)
        port = privileged_free_port()
        cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
        pki.a.install(cert, key)  # root-only (0600): read before the switch
        s = postie.make(passwd=pw.path, maildir=str(mail / "%u"), listen=[(HOST, port)],
                        extra=["--run-as", RUN_AS_USER, "--tls-cert", str(cert), "--tls-key", str(key)],
                        name="runas")
        s.listens = []  # start() must not probe the port: the first connection is the test's
        s.start()
        s.wait_log(r"master: Info: Running as ")
        s.wait_log(r"passwd-file\(.*\): Info: loaded 2 users")
        problems = []
        ids = proc_ids(s.pid)
        if ids["Uid"] != [uid] * 4 or ids["Gid"] != [gid] * 4:
            problems.append(f"/proc/{s.pid}/status: Uid {ids['Uid']} Gid {ids['Gid']} State {ids.get('State')}, "
                            f"want uid {uid} gid {gid} (real, effective, saved, fs)")
        threads = thread_ids(s.pid)
        root_threads = {tid: (t["Uid"], t["Gid"], t.get("State")) for tid, t in threads.items()
                        if t["Uid"] != [uid] * 4 or t["Gid"] != [gid] * 4}
        if root_threads:
            problems.append(f"{len(root_threads)} of {len(threads)} threads kept other credentials: {root_threads}")
        ctx = client_context(pki.cafile)
        try:
            with POP3Raw(HOST, port) as c:
                c.ok("STLS")
                c.starttls(ctx)
                c.login(*ALICE)
                assert c.retr(1) == canonical_crlf(msg)
                c.ok("DELE 1")
                c.ok("QUIT")
            assert md.message_files() == [], "DELE+QUIT did not remove the message as the unprivileged user"
            # bob's Maildir does not exist yet: the server creates it as postietest.
            with POP3Raw(HOST, port) as c:
                c.login(*BOB)
                c.ok("QUIT")
            st = (mail / "bob").stat()
            assert (st.st_uid, st.st_gid) == (uid, gid), f"new Maildir owned by {st.st_uid}:{st.st_gid}"
            uidlist = md.path / "postie-uidlist"
            if uidlist.exists():
                assert uidlist.stat().st_uid == uid, f"postie-uidlist owned by uid {uidlist.stat().st_uid}"
        except (AssertionError, EOFError, OSError) as e:
            time.sleep(0.3)
            problems.append(f"serving mail as {RUN_AS_USER} failed: {type(e).__name__}: {e}; server "
                            f"{'alive' if s.alive() else f'exited with {s.proc.returncode}'}; "
                            f"log tail: {s.log_tail(2)!r}")
        assert not problems, "--run-as: " + " | ".join(problems)
        s.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
