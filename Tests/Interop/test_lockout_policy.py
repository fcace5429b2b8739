"""The lockout policy (issue 19): a device retrying one stale password from an office NAT address
counts once, so the 20 colleagues behind that address are neither delayed nor locked out; 30
different wrong passwords still lock the address; a lockout survives a restart (--lockout-state,
even after SIGKILL); an exempt address (--lockout-exempt) is never locked; and the fail2ban filter
leaves the stale-password repeats out.

Client source addresses 127.0.0.x stand for different hosts (every 127/8 address is local on
Linux, so a client socket can bind to one before connecting).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import threading
import time
from pathlib import Path

from conftest import REPO, note
from kits.launcher import HOST, admin
from kits.mail import PasswdFile
from kits.pop3 import POP3Raw

FILTER = REPO / "contrib" / "fail2ban" / "filter.d" / "postie.conf"
LOCKED_OUT = "-ERR [SYS/TEMP] Too many failed logins from your IP address; try again later."
NAT = "127.0.0.2"        # the office address 21 people share
ATTACKER = "127.0.0.3"
MONITOR = "127.0.0.4"    # exempt
DELAY = 3.0              # --auth-failure-delay for the NAT test: large, so "not delayed" is clear
STALE_USER, STALE_OLD, STALE_NEW = "carol", "carols-old-password", "carols-new-password"
COLLEAGUES = [(f"user{i:02d}", f"pw-{i:02d}-secret") for i in range(1, 21)]


def users(tmp: Path) -> PasswdFile:
    pw = PasswdFile(tmp / "passwd")
    pw.add(STALE_USER, STALE_NEW, scheme="PLAIN")
    for user, password in COLLEAGUES:
        pw.add(user, password, scheme="PLAIN")
    pw.write()
    return pw


def timed_login(port: int, source: str, user: str, password: str) -> tuple[str, float]:
    """USER then PASS; the reply to PASS and the seconds from sending PASS to reading it."""
    with POP3Raw(HOST, port, source=source, read_greeting=False) as c:
        greeting = c.reply()
        if not greeting.startswith("+OK"):
            return greeting, 0.0
        r = c.cmd(f"USER {user}")
        if not r.startswith("+OK"):
            return r, 0.0
        t0 = time.monotonic()
        r = c.cmd(f"PASS {password}")
        dt = time.monotonic() - t0
        if r.startswith("+OK"):
            c.ok("QUIT")
        return r, dt


def fail2ban_matches(log: Path) -> list[str]:
    exe = shutil.which("fail2ban-regex")
    assert exe, "fail2ban-regex is missing (Debian package fail2ban)"
    r = subprocess.run([exe, "--print-all-matched", str(log), str(FILTER)], capture_output=True, timeout=120)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, f"fail2ban-regex exit {r.returncode}: {r.stderr.decode()[-2000:]}"
    return re.findall(r"^\|\s+(\S.*)$", out.split("Matched line(s):", 1)[-1], re.M)


def test_a_stale_password_on_a_nat_address_locks_nobody_out(postie, postie_bin, tmp_path):
    pw = users(tmp_path)
    s = postie.start(passwd=pw.path, maildir=str(tmp_path / "mail" / "%u"),
                     extra=["--auth-failure-delay", str(DELAY), "--lockout-threshold", "10",
                            "--lockout-window", "300", "--lockout-duration", "900"])
    stale: list[tuple[str, float]] = []
    lock = threading.Lock()

    def device() -> None:
        reply = timed_login(s.port, NAT, STALE_USER, STALE_OLD)
        with lock:
            stale.append(reply)

    failed = rf"Login failed: user=<{STALE_USER}>, method=USER, rip={re.escape(NAT)},"
    threads: list[threading.Thread] = []
    colleagues: list[tuple[str, str, float]] = []
    for i in range(30):
        # The device's next try, answered after the failure delay in its own thread; the server
        # has judged it (logged it) before the next colleague logs in.
        t = threading.Thread(target=device, daemon=True)
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 10
        while len(s.log_lines(failed)) <= i and t.is_alive():  # (a refusal ends the thread at once)
            assert time.monotonic() < deadline, f"the device's try {i + 1} was not judged within 10 s:\n{s.log_tail(10)}"
            time.sleep(0.02)
        if i < len(COLLEAGUES):
            user, password = COLLEAGUES[i]
            reply, dt = timed_login(s.port, NAT, user, password)
            colleagues.append((user, reply, dt))
    for t in threads:
        t.join(60)
    assert len(stale) == 30, f"only {len(stale)} of the device's 30 tries were answered"
    # After all 30 the address is still open, for the colleagues and for the device's owner.
    reply, dt = timed_login(s.port, NAT, STALE_USER, STALE_NEW)
    colleagues.append((STALE_USER, reply, dt))

    refused = [(u, r) for u, r, _ in colleagues if not r.startswith("+OK")]
    assert not refused, f"logins from the NAT address were refused: {refused}"
    slow = [(u, round(dt, 3)) for u, _, dt in colleagues if dt >= DELAY]
    assert not slow, f"logins answered after the {DELAY} s failure delay, i.e. delayed: {slow}"
    assert all(r.startswith("-ERR [AUTH]") for r, _ in stale), f"the stale tries got {set(r for r, _ in stale)}"
    # Each repeat still waits the failure delay: only its counting is spared.
    assert min(dt for _, dt in stale) >= DELAY, f"a stale try was answered in {min(dt for _, dt in stale):.3f}s"
    counted = s.log_lines(failed + r".*reason=auth failed$")
    repeats = s.log_lines(failed + r".*reason=stale password \(repeated; not counted\)$")
    assert (len(counted), len(repeats)) == (1, 29), f"{len(counted)} counted, {len(repeats)} repeats logged"
    assert not s.log_lines(r"Locked out|locked out after failed logins")
    # fail2ban counts what the server counts: the first failure, not the repeats.
    matched = fail2ban_matches(s.log_path)
    assert len(matched) == 1 and "reason=auth failed" in matched[0], f"fail2ban matched {matched}"
    # The operator sees why: `postie admin penalty` marks it as a stale password on a device.
    table = admin(postie_bin, s, "penalty")
    assert table.returncode == 0, table
    row = next((line for line in table.stdout.splitlines() if f" {NAT} " in line or f" {STALE_USER} " in line), "")
    assert "stale password on a device? (the same wrong password 29 more times" in row, table.stdout
    note(f"stale password from a NAT address: 30 tries (1 counted, 29 repeats answered in "
         f"{min(dt for _, dt in stale):.2f}-{max(dt for _, dt in stale):.2f}s), 21 correct logins from the "
         f"same address answered in at most {max(dt for _, _, dt in colleagues):.3f}s (auth_failure_delay {DELAY} s)")


def test_lockouts_survive_a_restart_and_spare_exempt_addresses(postie, tmp_path):
    pw = users(tmp_path)
    state = tmp_path / "state" / "lockouts"
    state.parent.mkdir()
    s = postie.start(passwd=pw.path, maildir=str(tmp_path / "mail" / "%u"),
                     extra=["--auth-failure-delay", "0.01", "--lockout-threshold", "10",
                            "--lockout-state", str(state), "--lockout-exempt", f"{MONITOR}/32"])
    user, password = COLLEAGUES[0]

    # 30 different wrong passwords lock the attacker's address at the 10th, as before.
    replies = [timed_login(s.port, ATTACKER, user, f"guess-{n}")[0] for n in range(30)]
    assert replies[:9] == ["-ERR [AUTH] Authentication failed."] * 9, replies[:10]
    assert replies[9] == LOCKED_OUT, f"the 10th wrong password got {replies[9]!r}"
    assert replies[10:] == [LOCKED_OUT] * 20, "a locked-out address was let in"
    assert len(s.log_lines(rf"Connection refused, locked out after failed logins: rip={re.escape(ATTACKER)},")) == 20

    # The exempt monitoring host: 30 wrong passwords, never delayed into a lockout, still logged.
    monitor = [timed_login(s.port, MONITOR, user, f"typo-{n}")[0] for n in range(30)]
    assert monitor == ["-ERR [AUTH] Authentication failed."] * 30, set(monitor)
    assert timed_login(s.port, MONITOR, user, password)[0].startswith("+OK")
    assert len(s.log_lines(rf"Login failed: .*rip={re.escape(MONITOR)},.*reason=auth failed$")) == 30
    assert len([l for l in fail2ban_matches(s.log_path) if f"rip={MONITOR}," in l]) == 30

    # Saved within a second or so, atomically, mode 0600: a SIGKILL loses nothing.
    deadline = time.monotonic() + 10
    while ATTACKER + " " not in (state.read_text() if state.exists() else ""):
        assert time.monotonic() < deadline, f"{state} never listed {ATTACKER}: {state.read_text() if state.exists() else 'missing'}"
        time.sleep(0.05)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    line = next(l for l in state.read_text().splitlines() if l.startswith(ATTACKER + " "))
    address, until, failures = line.split()
    assert failures == "10" and 0 < int(until) - time.time() <= 900 + 2, line
    s.kill()

    s2 = postie.start(passwd=pw.path, maildir=str(tmp_path / "mail" / "%u"),
                      extra=["--auth-failure-delay", "0.01", "--lockout-threshold", "10",
                             "--lockout-state", str(state), "--lockout-exempt", f"{MONITOR}/32"],
                      name="restarted")
    s2.wait_log(r"1 lockouts restored from ")
    with POP3Raw(HOST, s2.port, source=ATTACKER, read_greeting=False) as c:
        assert c.reply() == LOCKED_OUT, "the lockout did not survive the restart"
    assert timed_login(s2.port, MONITOR, user, password)[0].startswith("+OK")
    assert timed_login(s2.port, "127.0.0.5", user, password)[0].startswith("+OK")
    # A clean stop saves it again, still there.
    assert s2.stop() == 0
    assert any(l.startswith(ATTACKER + " ") for l in state.read_text().splitlines())
    note(f"lockout state: {state.read_text().strip().splitlines()[-1]!r} survived SIGKILL and restart")


def greeting_from(port: int, source: str) -> str:
    with POP3Raw(HOST, port, source=source, read_greeting=False) as c:
        return c.reply()


def wait_greeting(port: int, source: str, want, what: str, timeout: float = 10.0) -> None:
    """Polls until a connection from `source` gets a greeting for which `want` is true."""
    deadline = time.monotonic() + timeout
    while not want(g := greeting_from(port, source)):
        assert time.monotonic() < deadline, f"{what}: still {g!r} after {timeout} s"
        time.sleep(0.1)


def test_postgres_nodes_share_lockouts(pgdb, postie):
    """With --store postgres a lockout made on one node reaches the others through the database
    (table lockouts), survives a restart there, and lifting it in the table lifts it everywhere."""
    user, password = COLLEAGUES[0]
    pgdb.add_user(user, password, scheme="PLAIN")
    flags = ["--auth-failure-delay", "0.01", "--lockout-threshold", "5"]
    a = pgdb.serve(postie, *flags, name="node-a")
    b = pgdb.serve(postie, *flags, name="node-b")
    replies = [timed_login(a.port, ATTACKER, user, f"guess-{n}")[0] for n in range(5)]
    assert replies == ["-ERR [AUTH] Authentication failed."] * 4 + [LOCKED_OUT], replies
    wait_greeting(b.port, ATTACKER, lambda g: g == LOCKED_OUT, "node b never learned of node a's lockout")
    assert pgdb.psql("SELECT host(address) || ' ' || failures FROM lockouts") == f"{ATTACKER} 5"
    assert timed_login(b.port, "127.0.0.5", user, password)[0].startswith("+OK"), "only the attacker is locked out"

    # A restarted node takes the lockout from the database, without a state file.
    b.kill()
    b2 = pgdb.serve(postie, *flags, name="node-b2")
    wait_greeting(b2.port, ATTACKER, lambda g: g == LOCKED_OUT, "the restarted node forgot the lockout")

    # An operator lifting it in the database (what `postie admin unban` does) frees it on every node.
    pgdb.psql(f"DELETE FROM lockouts WHERE address = '{ATTACKER}'")
    for node in (a, b2):
        wait_greeting(node.port, ATTACKER, lambda g: g.startswith("+OK"), f"{node.name} kept a lifted lockout")
    assert timed_login(a.port, ATTACKER, user, password)[0].startswith("+OK")
