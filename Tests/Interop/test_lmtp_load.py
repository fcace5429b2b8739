"""LMTP under load: a 200 MB message streamed to disk with the server's memory flat and read
back byte-exact over POP3, and parallel deliveries while POP3 sessions delete.
"""

from __future__ import annotations

import random
import re
import threading
import time
from pathlib import Path

from conftest import note
from kits.mail import ALICE, write_big_message
from kits.lmtp import lmtp, lmtp_env, mem_kib, pop3_messages
from kits.pop3 import login_within, POP3Raw


# --------------------------------------------------------------------------
# A 200 MB message: streamed to disk, memory flat, byte-exact over POP3
# --------------------------------------------------------------------------


def test_200mb_message_memory_stays_flat(env_factory, tmp_path):
    big = write_big_message(tmp_path / "big200.eml", target_size=200 * 1024 * 1024, seed=2033)
    e = lmtp_env(env_factory, "--lmtp-max-size", str(220 * 1024 * 1024))
    pid = e.server.pid
    # Warm up: one small delivery so lazily allocated pools exist.
    c = lmtp(e)
    assert c.sendmail("s@example.org", ["bob"], b"Subject: warm-up\n\nx\n") == {}
    c.quit()
    before = mem_kib(pid)

    peak = [before["VmRSS"]]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], mem_kib(pid)["VmRSS"])
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    c = lmtp(e, timeout=300)
    assert c.mail("s@example.org", [f"SIZE={big.crlf_size}"])[0] == 250
    assert c.rcpt("alice")[0] == 250
    c.putcmd("data")
    assert c.getreply()[0] == 354
    with open(big.path, "rb") as f:  # LF lines, dot-stuffed here, streamed
        held = b""
        while True:
            lines = f.readlines(1 << 20)
            if not lines:
                break
            c.sock.sendall(held)
            held = re.sub(rb"(?m)^\.", b"..", b"".join(lines))
    # Only CRLF . CRLF ends DATA (SMTP smuggling, test_lmtp_smuggling.py): the last line
    # ends in CRLF, whatever the others end in.
    assert held.endswith(b"\n") and not held.endswith(b"\r\n")
    c.sock.sendall(held[:-1] + b"\r\n.\r\n")
    code, text = c.getreply()
    took = time.monotonic() - t0
    stop.set()
    sampler.join()
    assert code == 250, (code, text)
    c.quit()
    after = mem_kib(pid)
    grown = (peak[0] - before["VmRSS"]) // 1024
    hwm_grown = (after["VmHWM"] - before["VmHWM"]) // 1024
    note(f"LMTP 200 MB: delivered in {took:.1f}s ({big.crlf_size / took / 2**20:.0f} MiB/s); server RSS "
         f"{before['VmRSS'] // 1024} MiB before, peak {peak[0] // 1024} MiB during (+{grown} MiB), "
         f"VmHWM {before['VmHWM'] // 1024} -> {after['VmHWM'] // 1024} MiB")
    assert grown < 64 and hwm_grown < 64, (
        f"server memory grew by {grown} MiB (VmHWM +{hwm_grown} MiB) for a {big.crlf_size >> 20} MiB message: "
        "it is buffered instead of streamed to disk")

    # Byte-exact over POP3, streamed and hashed.
    p = POP3Raw(e.host, e.port, timeout=120)
    p.login(*ALICE)
    assert p.stat() == (1, big.crlf_size)
    p.sendline("RETR 1")
    assert p.reply().startswith("+OK")
    assert p.read_multiline_digest() == (big.crlf_size, big.crlf_sha)
    p.ok("QUIT")
    p.close()


# --------------------------------------------------------------------------
# Parallel deliveries while POP3 sessions delete
# --------------------------------------------------------------------------


def test_parallel_deliveries_while_sessions_delete(env_factory):
    e = lmtp_env(env_factory)
    senders, per_sender = 4, 15
    all_ids = {f"m-{s}-{i}" for s in range(senders) for i in range(per_sender)}
    errors: list[str] = []
    delivering = threading.Event()
    delivering.set()
    lock = threading.Lock()
    deleted: list[str] = []  # ids whose deletion a QUIT committed
    uidl_of: dict[str, str] = {}  # id -> UIDL, which must never change or be shared
    sessions = [0]
    during = [0]  # messages delivered while a session was open (seen in new/)

    def body(mid: str) -> bytes:
        return f"Message-ID: <{mid}@test>\nSubject: {mid}\n\n{mid}\n".encode()

    def msg_id(data: bytes) -> str:
        return re.search(rb"Message-ID: <([^@]+)@test>", data).group(1).decode()

    def sender(s: int):
        try:
            c = lmtp(e)
            for i in range(per_sender):
                mid = f"m-{s}-{i}"
                code, text = c.mail("s@example.org")
                assert code == 250, text
                assert c.rcpt("alice@example.org")[0] == 250
                code, text = c.data(body(mid))
                assert code == 250, f"{mid}: {code} {text!r}"
                time.sleep(random.random() * 0.04)
            c.quit()
        except Exception as ex:
            errors.append(f"sender {s}: {ex!r}")

    def reader(r: int):
        rng = random.Random(r)
        try:
            while True:
                last_round = not delivering.is_set()
                c, _ = login_within(e.host, e.port, ALICE, 30)
                uidl = c.listing("UIDL")
                sizes = c.listing("LIST")
                stat = c.stat()
                ids = {}
                for n in sorted(uidl):
                    data = c.retr(n)
                    assert len(data) == int(sizes[n]), f"LIST {sizes[n]} != RETR {len(data)}"
                    ids[n] = msg_id(data)
                time.sleep(0.1)  # deliveries go on meanwhile: they land in new/, not in this list
                arrived = len(list((Path(e.template.replace("%u", "alice")) / "new").iterdir()))
                assert c.listing("UIDL") == uidl, "the UIDL list changed during a session"
                assert c.stat() == stat, "STAT changed during a session"
                assert len(set(ids.values())) == len(ids), f"a message listed twice: {ids}"
                doomed = [n for n in sorted(ids) if last_round or rng.random() < 0.7]
                for n in doomed:
                    c.ok(f"DELE {n}")
                assert c.quit().startswith("+OK")
                c.close()
                with lock:
                    sessions[0] += 1
                    during[0] += arrived
                    for n, mid in ids.items():
                        if uidl_of.setdefault(mid, uidl[n]) != uidl[n]:
                            errors.append(f"{mid} changed UIDL from {uidl_of[mid]} to {uidl[n]}")
                    deleted.extend(ids[n] for n in doomed)
                if last_round:
                    return
        except Exception as ex:
            errors.append(f"reader {r}: {ex!r}")

    threads = [threading.Thread(target=sender, args=(s,)) for s in range(senders)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in range(3)]
    t0 = time.monotonic()
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(120)
    delivering.clear()
    for t in readers:
        t.join(120)
    assert not any(t.is_alive() for t in threads + readers), "a sender or reader hung"
    assert not errors, "; ".join(errors[:5])
    remaining = [msg_id(m) for m in pop3_messages(e, "alice")]
    assert len(deleted) == len(set(deleted)), "a message was deleted by two sessions (listed twice)"
    assert not set(deleted) & set(remaining), "a deleted message came back"
    assert len(remaining) == len(set(remaining)), "a message is stored twice"
    assert set(deleted) | set(remaining) == all_ids, f"lost: {sorted(all_ids - set(deleted) - set(remaining))[:5]}"
    assert len(set(uidl_of.values())) == len(uidl_of), "two messages shared a UIDL"
    assert during[0] > 0, "no delivery happened while a POP3 session was open: the test proved nothing"
    note(f"LMTP: {len(all_ids)} messages from {senders} parallel senders, {sessions[0]} POP3 sessions deleting "
         f"{len(deleted)} of them meanwhile ({during[0]} arrived while a session was open), "
         f"{time.monotonic() - t0:.1f}s: none lost, none duplicated")
