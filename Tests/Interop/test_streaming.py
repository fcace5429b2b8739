"""Large bodies stream with backpressure, and one session never stalls another."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

from conftest import note
from kits.mail import ALICE, BOB, canonical_crlf, CRLF, numbered_message, sha
from kits.pop3 import login_within, POP3Raw


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_stalled_reader_of_a_huge_message_does_not_buffer_it_or_block_others(env, big_message):
    env.maildir("alice").deliver_link(big_message.path)
    env.maildir("bob").deliver(b"Subject: small\n\nhi\n")
    # Warm up: one complete session so that lazily allocated pools exist.
    c = POP3Raw(env.host, env.port)
    c.login(*BOB)
    c.ok("QUIT")
    c.close()
    base = rss_kib(env.server.pid)

    a = POP3Raw(env.host, env.port)
    a.login(*ALICE)
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    a.send(b"RETR 1\r\n")  # and read nothing for a while
    time.sleep(2.0)

    t = time.monotonic()
    b = POP3Raw(env.host, env.port)
    b.login(*BOB)
    assert b.stat()[0] == 1
    assert b.retr(1) == b"Subject: small\r\n\r\nhi\r\n"
    b.ok("QUIT")
    b.close()
    other = time.monotonic() - t
    grown = (rss_kib(env.server.pid) - base) // 1024
    note(f"stalled 105 MB RETR: another session took {other * 1000:.0f} ms; server RSS grew {grown} MiB")
    assert other < 10.0, f"a second session took {other:.1f}s while another client stalled a big RETR"
    assert grown < 64, (f"server RSS grew by {grown} MiB while a client did not read a {big_message.crlf_size >> 20} MiB "
                        f"message: the body is buffered instead of streamed with backpressure")

    # Now read it all: still byte-exact after the stall.
    a.sock.settimeout(60)
    r = a.reply()
    assert r.startswith("+OK"), f"RETR 1 got {r!r}"
    assert a.read_multiline_digest() == (big_message.crlf_size, big_message.crlf_sha), \
        "big message differs after a stall"
    a.ok("QUIT")
    a.close()


def test_client_vanishing_mid_retr(env, big_message):
    env.maildir("alice").deliver_link(big_message.path)
    for _ in range(3):
        # The previous session ends when the server notices the RST: allow it a moment.
        a, _ = login_within(env.host, env.port, ALICE, 30)
        a.send(b"RETR 1\r\n")
        a.read_bytes(3 << 20)
        a.abort()
    time.sleep(0.2)
    assert env.server.alive(), "server died after clients vanished in the middle of a RETR"
    c = POP3Raw(env.host, env.port)
    r = c.try_login(*ALICE)
    if not r.startswith("+OK"):
        c.close()
        c, waited = login_within(env.host, env.port, ALICE, 30)
        note(f"lock released {waited:.2f}s after a client vanished mid-RETR")
    assert c.stat()[0] == 1
    c.ok("QUIT")


def test_concurrent_sessions_of_many_users(env_factory):
    users = [(f"user{i:02d}", f"pw-{i:02d}") for i in range(16)]
    rng = random.Random(7)
    msgs: dict[str, list[bytes]] = {}

    def prefill(e):
        for u, p in users:
            e.passwd.add(u, p, scheme="PLAIN" if int(u[-2:]) % 2 else "SHA512-CRYPT")
            md = e.maildir(u)
            msgs[u] = [numbered_message(int(u[-2:]) * 100 + k, rng) for k in range(20)]
            for m in msgs[u]:
                md.deliver(m)
        e.passwd.write()

    e = env_factory(prefill=prefill)
    errors: list[str] = []

    def worker(u: str, p: str) -> None:
        try:
            for _ in range(3):
                c = POP3Raw(e.host, e.port, timeout=30)
                c.login(u, p)
                nums = sorted(c.listing("LIST"))
                c.send(b"".join(b"RETR %d\r\n" % n for n in nums))
                got = []
                for n in nums:
                    r = c.reply()
                    assert r.startswith("+OK"), f"{u} RETR {n}: {r!r}"
                    got.append(b"".join(l + CRLF for l in c.read_multiline()))
                assert sorted(map(sha, got)) == sorted(sha(canonical_crlf(m)) for m in msgs[u]), \
                    f"{u} got someone else's or damaged messages"
                c.ok("QUIT")
                c.close()
        except Exception as ex:  # collected and reported below
            errors.append(f"{u}: {ex}")

    threads = [threading.Thread(target=worker, args=up) for up in users]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "a concurrent session hung"
    assert not errors, "; ".join(errors[:5])
    note(f"16 users x 3 concurrent sessions x 20 messages: {time.monotonic() - t:.2f}s")
