"""The server process: the idle timeout, IPv6 and two listeners, what it logs (and never logs),
restarting on the same port, SIGTERM with open sessions, and `postie serve --demo`.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from conftest import note
from kits.launcher import free_port
from kits.mail import ALICE, BOB, canonical_crlf, Maildir, make_passwd
from kits.pop3 import login_within, POP3Raw
from kits.sessions import MSG1, session, three


def test_idle_timeout(env_factory):
    e = env_factory(extra=["--idle-timeout", "2"])
    three(e)
    c = session(e)
    t = time.monotonic()
    data = c.expect_closed(timeout=10)
    waited = time.monotonic() - t
    assert waited >= 1.5, f"closed after {waited:.1f}s with --idle-timeout 2"
    note(f"idle timeout 2s: closed after {waited:.2f}s, last bytes {data[-80:]!r}")
    # The lock went with the session.
    c2, _ = login_within(e.host, e.port, ALICE, 30)
    assert c2.stat()[0] == 3
    c2.ok("QUIT")
    # Also before login.
    c3 = POP3Raw(e.host, e.port)
    c3.expect_closed(timeout=10)


def test_ipv6_and_two_listeners(postie, tmp_path):

    pw = make_passwd(tmp_path)
    template = str(tmp_path / "mail" / "%u")
    Maildir(Path(template.replace("%u", "alice"))).deliver(MSG1)
    p4, p6 = free_port("127.0.0.1"), free_port("::1")
    s = postie.start(passwd=pw.path, maildir=template, listen=[("127.0.0.1", p4), ("::1", p6)])
    c = POP3Raw("::1", p6)
    c.login(*ALICE)
    assert c.retr(1) == canonical_crlf(MSG1)
    c.ok("QUIT")
    c = POP3Raw("127.0.0.1", p4)
    c.login(*ALICE)
    c.ok("QUIT")
    deadline = time.monotonic() + 30
    while "rip=::1" not in s.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "rip=::1" in s.log_text(), f"no 'rip=::1' login line in the log:\n{s.log_tail()}"


def test_log_lines_and_no_secrets(env):
    msgs = three(env)
    c = session(env)
    # The messages' own octets, as LIST counts them: dot-stuffing (MSG1 and MSG2 have lines
    # beginning with ".") is not counted in the logout line's retr=N/bytes.
    retrieved = len(c.retr(1)) + len(c.retr(2))
    c.ok("DELE 3")
    c.ok("QUIT")
    c.close()
    bad = POP3Raw(env.host, env.port)
    bad.try_login(ALICE[0], "Wr0ng-Secret-Attempt")
    bad.close()
    deadline = time.monotonic() + 30
    while "Disconnected" not in env.server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = env.server.log_text()
    assert re.search(r"Login: user=<alice>, method=USER, rip=127\.0\.0\.1", log), f"no Login line:\n{log}"
    m = re.search(r"Disconnected: Logged out top=(\d+)/(\d+), retr=(\d+)/(\d+), del=(\d+)/(\d+), size=(\d+)", log)
    assert m, f"no 'Disconnected: Logged out top=.., retr=.., del=.., size=..' line:\n{log}"
    assert m.group(3) == "2" and m.group(5) == "1", f"expected retr=2/… del=1/…, got {m.group(0)!r}"
    assert int(m.group(4)) == retrieved, f"expected retr=2/{retrieved}, got {m.group(0)!r}"
    for secret in (ALICE[1], BOB[1], "Wr0ng-Secret-Attempt"):
        assert secret not in log, f"a password ({secret!r}) appears in the server log"


def test_restart_on_the_same_port(env):
    three(env)
    for _ in range(3):
        c = session(env)
        c.retr(1)
        c.ok("QUIT")
        c.close()
    env.server.stop()
    env.restart(same_port=True)
    c = session(env)
    assert c.stat()[0] == 3
    c.ok("QUIT")


def test_sigterm_with_open_sessions_exits_promptly(env):
    three(env)
    c = session(env)
    idle = POP3Raw(env.host, env.port)
    t = time.monotonic()
    rc = env.server.stop(timeout=10)
    took = time.monotonic() - t
    assert not env.server.notes, f"server ignored SIGTERM for 10s with two open connections"
    assert rc == 0, f"exit status {rc} after SIGTERM (expected a clean 0)"
    note(f"SIGTERM with open sessions: exited {rc} after {took:.2f}s")


def test_demo(postie, tmp_path):
    port = free_port()
    p = postie.start(passwd=None, maildir=None, listen=[("127.0.0.1", port)], extra=["--demo"], name="demo",
                     ready_timeout=10)
    try:
        r = subprocess.run(["curl", "-sS", "--max-time", "30", f"pop3://127.0.0.1:{port}/", "-u", "demo:demo"],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, f"curl LIST on the demo: exit {r.returncode} {r.stderr!r}"
        listing = [l for l in r.stdout.decode().split("\r\n") if l]
        assert listing, "the demo mailbox is empty"
        for line in listing:
            n = line.split()[0]
            r = subprocess.run(["curl", "-sS", "--max-time", "30", f"pop3://127.0.0.1:{port}/{n}", "-u", "demo:demo"],
                               capture_output=True, timeout=60)
            assert r.returncode == 0 and b":" in r.stdout, f"curl RETR {n} on the demo: {r}"
            assert len(r.stdout) == int(line.split()[1]), f"demo message {n}: LIST {line!r}, got {len(r.stdout)} octets"
        out = p.output()
        assert str(port) in out or "demo" in out, f"the demo did not say how to connect: {out!r}"
    finally:
        p.stop()


def test_demo_shows_tls_and_its_printed_check_passes(postie, postie_bin):
    """The demo makes its own CA and certificate: STLS on the plain port, implicit TLS on the
    TLS port, and the `postie check` command it prints exits 0 (issue 19)."""
    port, tls_port = free_port(), free_port()
    p = postie.start(passwd=None, maildir=None, listen=[("127.0.0.1", port)], extra=["--demo", "--listen-tls", f"127.0.0.1:{tls_port}"],
                     name="demo-tls", ready_timeout=10)
    try:
        deadline = time.monotonic() + 10
        while "postie check" not in p.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        out = p.output()
        m = re.search(r"POSTIE_PASSWORD=demo postie check (.+)", out)
        assert m, f"the demo printed no postie check command: {out!r}"
        ca = re.search(r"--ca-file (\S+)", m.group(1)).group(1)
        r = subprocess.run([str(postie_bin), "check", *m.group(1).split()], env=dict(os.environ, POSTIE_PASSWORD="demo"),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"the demo's printed check exited {r.returncode}:\n{r.stdout}{r.stderr}"
        assert f"--tls-port {tls_port}" in m.group(1)
        for url, extra in ((f"pop3s://127.0.0.1:{tls_port}/", []), (f"pop3://127.0.0.1:{port}/", ["--ssl-reqd"])):
            r = subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", ca, *extra, url, "-u", "demo:demo"],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.startswith("1 "), f"curl {extra} {url} with the demo CA: {r}"
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_port}", "-CAfile", ca, "-verify_return_error",
                            "-verify_ip", "127.0.0.1"], input="QUIT\r\n", capture_output=True, text=True, timeout=60)
        assert "Verify return code: 0 (ok)" in r.stdout, r.stdout[-2000:]
        note(f"demo: STLS on {port}, implicit TLS on {tls_port}, printed check exited 0")
    finally:
        p.stop()
