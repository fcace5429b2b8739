"""Brute force: a flood of failed logins from one address is slowed, then locked out; the real
user from another address is not slowed; the fail2ban filter in contrib/ matches every failure
and no success, in the log file and in journal lines.

Client source addresses 127.0.0.2 ... 127.0.0.9 stand for different hosts: on Linux every
address in 127.0.0.0/8 is local, so a client socket can bind to one before connecting.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, note
from kits.launcher import free_port, HOST, PostieServer
from kits.mail import ALICE, Maildir, make_passwd
from kits.pop3 import POP3Raw

# POSTIE_FAIL2BAN_FILTER tries a candidate filter instead (a filter.d/postie.conf with common.conf beside it).
FILTER = Path(os.environ.get("POSTIE_FAIL2BAN_FILTER", REPO / "contrib" / "fail2ban" / "filter.d" / "postie.conf"))
LOCKED_OUT = "-ERR [SYS/TEMP] Too many failed logins from your IP address; try again later."


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
