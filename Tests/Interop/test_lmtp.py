"""LMTP (RFC 2033) into Maildir, driven by Python's smtplib.LMTP, and `postie deliver`.

Every message delivered is read back over POP3 and compared octet for octet with its
canonical CRLF form.
"""

from __future__ import annotations

import os
import random
import re
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import note
from kits.launcher import free_port, wait_port
from kits.mail import ALICE, CRLF, write_big_message
from kits.pop3 import login_within, POP3Raw

CAROL = ("carol@example.org", "carol-pw")  # a user named by the whole address


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def lmtp_env(env_factory, *extra: str):
    """A server with a POP3 and an LMTP listener, users alice, bob and carol@example.org."""
    lport = free_port()

    def prefill(e):
        e.passwd.add(*CAROL, scheme="PLAIN")
        e.passwd.write()

    e = env_factory(extra=["--listen-lmtp", f"127.0.0.1:{lport}", *extra], prefill=prefill)
    e.users[CAROL[0]] = CAROL[1]
    e.lmtp_port = lport
    wait_port(lport)
    return e


def lmtp(e, timeout: float = 60) -> smtplib.LMTP:
    c = smtplib.LMTP("127.0.0.1", e.lmtp_port, timeout=timeout)
    code, _ = c.ehlo()  # smtplib.LMTP sends LHLO
    assert code == 250
    return c


def data_replies(c: smtplib.LMTP, msg: bytes, accepted: int) -> list[tuple[int, bytes]]:
    """DATA, then one reply per accepted recipient (RFC 2033 section 4.2). smtplib reads only
    the first; the others are read with getreply()."""
    first = c.data(msg)
    return [first] + [c.getreply() for _ in range(accepted - 1)]


def canonical(msg: bytes) -> bytes:
    """What LMTP must store of a message sent with smtplib: smtplib ends it with CRLF unless it
    already ends so (a bare LF at the end thus leaves an empty line); the server turns every
    bare LF into CRLF (a bare CR stays)."""
    if not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    return re.sub(rb"(?<!\r)\n", b"\r\n", msg)


def pop3_messages(e, user: str) -> list[bytes]:
    c = POP3Raw(e.host, e.port)
    c.login(user, e.users[user])
    n, _ = c.stat()
    out = [c.retr(i) for i in range(1, n + 1)]
    c.ok("QUIT")
    c.close()
    return out


def mem_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1])
    return out


class RawLMTP:
    """A plain socket for what smtplib cannot do: pipelining and malformed input."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        lines = []
        while True:
            try:
                line = self.f.readline(1 << 16)
            except ConnectionResetError:
                line = b""
            if not line:
                return "\n".join(lines) if lines else "<EOF>"
            assert line.endswith(CRLF), f"reply line without CRLF: {line!r}"
            lines.append(line[:-2].decode())
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def replies(self, n: int) -> list[str]:
        return [self.reply() for _ in range(n)]

    def close(self) -> None:
        self.f.close()
        self.sock.close()


# --------------------------------------------------------------------------
# smtplib.LMTP
# --------------------------------------------------------------------------


def test_one_message_to_several_recipients_one_reply_each(env_factory):
    e = lmtp_env(env_factory)
    c = lmtp(e)
    assert {"pipelining", "enhancedstatuscodes", "8bitmime", "size"} <= set(c.esmtp_features)
    assert c.mail("sender@example.org", ["BODY=8BITMIME"])[0] == 250
    assert c.rcpt("alice@example.org")[0] == 250
    code, text = c.rcpt("nobody@example.org")
    assert (code, text[:5]) == (550, b"5.1.1"), (code, text)
    assert c.rcpt("bob@example.org")[0] == 250
    assert c.rcpt(CAROL[0])[0] == 250  # the whole address is a user
    msg = b"From: sender@example.org\nSubject: to three\nMessage-ID: <three@example.org>\n\nHello\xe9 all\n"
    replies = data_replies(c, msg, 3)
    assert [r[0] for r in replies] == [250, 250, 250], replies
    for (code, text), who in zip(replies, ["alice@example.org", "bob@example.org", CAROL[0]]):
        assert text.startswith(b"2.0.0 <" + who.encode() + b">"), text
    assert c.noop()[0] == 250
    c.quit()

    # Durable before the replies: the Maildir file and the index entry exist already.
    files = list((Path(e.template.replace("%u", "alice")) / "new").iterdir())
    assert len(files) == 1 and re.search(r",S=\d+,W=\d+$", files[0].name), files
    index = (Path(e.template.replace("%u", "alice")) / "postie-uidlist").read_text()
    assert files[0].name in index
    for user in ("alice", "bob", CAROL[0]):
        assert pop3_messages(e, user) == [canonical(msg)], user


def test_unknown_user_is_refused_and_nothing_stored(env_factory):
    e = lmtp_env(env_factory)
    c = lmtp(e)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        c.sendmail("s@example.org", ["nobody@example.org"], b"Subject: x\n\nx\n")
    code, text = refused.value.recipients["nobody@example.org"]
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    c.quit()
    assert pop3_messages(e, "alice") == []


def test_size_limit(env_factory):
    e = lmtp_env(env_factory, "--lmtp-max-size", "50000")
    c = lmtp(e)
    assert c.esmtp_features["size"] == "50000"
    big = b"Subject: big\n\n" + b"x" * 60000 + b"\n"
    # smtplib announces SIZE=... in MAIL FROM and is refused there (RFC 1870).
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        c.sendmail("s@example.org", ["alice@example.org"], big)
    assert refused.value.smtp_code == 552 and refused.value.smtp_error.startswith(b"5.3.4")
    c.rset()
    # Without SIZE the server reads the whole message and refuses it for each recipient.
    assert c.mail("s@example.org")[0] == 250
    assert c.rcpt("alice")[0] == 250
    assert c.rcpt("bob")[0] == 250
    replies = data_replies(c, big, 2)
    assert [(r[0], r[1][:5]) for r in replies] == [(552, b"5.3.4")] * 2, replies
    assert c.noop()[0] == 250
    # Exactly at the limit is fine.
    head = b"Subject: fits\r\n\r\n"
    fits = head + b"y" * (50000 - len(head) - 2) + b"\r\n"
    assert len(fits) == 50000
    assert c.sendmail("s@example.org", ["alice"], fits) == {}
    c.quit()
    assert pop3_messages(e, "alice") == [fits]
    assert pop3_messages(e, "bob") == []


def test_dot_unstuffing_bare_lf_and_8bit(env_factory):
    e = lmtp_env(env_factory)
    msg = (b"Subject: dots\n\n.leading dot\n..two dots\n.\n...\nbare LF\nCRLF line\r\n"
           b"a bare \r inside\n\xff\xfe 8-bit\nlast line without newline")
    c = lmtp(e)
    assert c.sendmail("s@example.org", ["alice"], msg) == {}  # smtplib dot-stuffs
    c.quit()
    got = pop3_messages(e, "alice")
    assert got == [canonical(msg)]
    assert b"\r\n.\r\n...\r\n" in got[0] and b"a bare \r inside\r\n" in got[0]


# --------------------------------------------------------------------------
# Raw protocol: pipelining and bad input
# --------------------------------------------------------------------------


def test_pipelining_whole_transactions(env_factory):
    e = lmtp_env(env_factory)
    r = RawLMTP(e.lmtp_port)
    assert r.greeting.startswith("220 ")
    r.send(b"LHLO mx.example.org\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice>\r\n"
           b"RCPT TO:<ghost>\r\nRCPT TO:<bob>\r\nDATA\r\n")
    got = r.replies(6)
    assert got[0].startswith("250-") and "PIPELINING" in got[0]
    assert got[1:] == ["250 2.1.0 OK", "250 2.1.5 <alice> OK", "550 5.1.1 <ghost> User doesn't exist",
                       "250 2.1.5 <bob> OK", "354 End data with <CR><LF>.<CR><LF>"]
    # The message, then a second transaction and QUIT in the same packet (RFC 2920 section 3).
    r.send(b"Subject: one\r\n\r\n..stuffed\nbare\r\n.\r\n"
           b"MAIL FROM:<>\r\nRCPT TO:<alice>\r\nDATA\r\n")
    assert r.replies(5) == ["250 2.0.0 <alice> Saved", "250 2.0.0 <bob> Saved", "250 2.1.0 OK",
                            "250 2.1.5 <alice> OK", "354 End data with <CR><LF>.<CR><LF>"]
    r.send(b"Subject: two\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
    assert r.replies(2) == ["250 2.0.0 <alice> Saved", "221 2.0.0 Bye"]
    assert r.reply() == "<EOF>"
    r.close()
    assert pop3_messages(e, "alice") == [b"Subject: one\r\n\r\n.stuffed\r\nbare\r\n", b"Subject: two\r\n\r\ntwo\r\n"]
    assert pop3_messages(e, "bob") == [b"Subject: one\r\n\r\n.stuffed\r\nbare\r\n"]


def test_bad_input_gets_clear_errors(env_factory):
    e = lmtp_env(env_factory, "--lmtp-max-recipients", "2")
    r = RawLMTP(e.lmtp_port)
    r.send(b"HELO x\r\nMAIL FROM:<a>\r\nLHLO\r\nLHLO mx\r\nRCPT TO:<alice>\r\nDATA\r\nFROB\r\n"
           + b"NOOP " + b"x" * 5000 + b"\r\n"
           + b"MAIL FROM:<a> SIZE=abc\r\nMAIL FROM:<a> BODY=BINARYMIME\r\nMAIL FROM:a\r\nMAIL FROM:<a>\r\n"
           + b"MAIL FROM:<b>\r\nRCPT TO:<>\r\nRCPT TO:<../../etc@x>\r\nRCPT TO:<alice> NOTIFY=NEVER\r\n"
           + b"RCPT TO:<alice>\r\nRCPT TO:<bob>\r\nRCPT TO:<alice>\r\nVRFY alice\r\nRSET\r\nDATA\r\nNOOP\x00\r\n")
    got = r.replies(23)
    expected = [
        "500 5.5.1 This is an LMTP server: use LHLO (RFC 2033)",
        "503 5.5.1 Send LHLO first",
        "501 5.5.4 Syntax: LHLO hostname",
        None,  # the LHLO reply
        "503 5.5.1 Send MAIL FROM first",
        "503 5.5.1 Send MAIL FROM first",
        "500 5.5.2 Unknown command",
        "500 5.5.2 Line too long",
        "501 5.5.4 SIZE needs a number of octets",
        "555 5.5.4 BODY must be 7BIT or 8BITMIME",
        "501 5.5.4 Syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME]",
        "250 2.1.0 OK",
        "503 5.5.1 Nested MAIL command",
        "501 5.5.4 Syntax: RCPT TO:<address>, not an empty address",
        "501 5.1.3 Bad recipient address syntax",
        "555 5.5.4 Unsupported RCPT parameter NOTIFY",
        "250 2.1.5 <alice> OK",
        "250 2.1.5 <bob> OK",
        "452 4.5.3 Too many recipients",
        "252 2.5.2 Cannot VRFY user, but will accept the message and attempt delivery",
        "250 2.0.0 OK",
        "503 5.5.1 Send MAIL FROM first",
        "500 5.5.2 Invalid character in command",
    ]
    for i, (g, x) in enumerate(zip(got, expected)):
        if x is not None:
            assert g == x, f"reply {i}: {g!r} != {x!r}"
    # Too many bad commands end the session, as in Dovecot.
    r.send(b"FROB\r\n" * 4)
    assert r.replies(5) == ["500 5.5.2 Unknown command"] * 3 + [
        "421 4.7.0 Too many invalid commands, closing connection", "<EOF>"]
    r.close()
    # A connection dropped in the middle of DATA delivers nothing.
    r = RawLMTP(e.lmtp_port)
    r.send(b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice>\r\nDATA\r\n")
    assert r.replies(4)[3].startswith("354")
    r.send(b"Subject: cut\r\n\r\nhalf a message")
    r.close()
    time.sleep(0.3)
    assert pop3_messages(e, "alice") == []
    assert e.server.alive()


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
        while True:
            lines = f.readlines(1 << 20)
            if not lines:
                break
            c.sock.sendall(re.sub(rb"(?m)^\.", b"..", b"".join(lines)))
    c.sock.sendall(b".\r\n")
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


# --------------------------------------------------------------------------
# postie deliver
# --------------------------------------------------------------------------


def run_deliver(postie_bin, args: list[str], stdin) -> subprocess.CompletedProcess:
    return subprocess.run([str(postie_bin), "deliver", *args], stdin=stdin if not isinstance(stdin, bytes) else None,
                          input=stdin if isinstance(stdin, bytes) else None, capture_output=True, timeout=60)


def test_postie_deliver_exit_codes(env_factory, postie_bin, tmp_path):
    e = env_factory()
    spool = tmp_path / "spool"
    spool.mkdir()
    base = ["--maildir", e.template, "--passwd-file", str(e.passwd.path), "--spool-dir", str(spool)]

    # 0: delivered, an mbox "From " line dropped, line ends made CRLF; retrievable over POP3.
    r = run_deliver(postie_bin, ["--user", "alice", *base],
                    b"From sender@example.org Tue Nov 14 10:00:00 2023\nSubject: piped\n\n.dot stays\nlast")
    assert r.returncode == 0, r.stderr
    r = run_deliver(postie_bin, ["--user", "bob@example.org", *base], b"Subject: to bob\r\n\r\nhi\r\n")
    assert r.returncode == 0, r.stderr  # the local part of an address
    assert pop3_messages(e, "alice") == [b"Subject: piped\r\n\r\n.dot stays\r\nlast\r\n"]
    assert pop3_messages(e, "bob") == [b"Subject: to bob\r\n\r\nhi\r\n"]

    # 67 EX_NOUSER
    r = run_deliver(postie_bin, ["--user", "nobody", *base], b"Subject: x\n\nx\n")
    assert r.returncode == 67 and b"no such user: nobody" in r.stderr, r
    # 65 EX_DATAERR: empty, or over --max-size
    r = run_deliver(postie_bin, ["--user", "alice", *base], b"")
    assert r.returncode == 65 and b"empty message" in r.stderr, r
    r = run_deliver(postie_bin, ["--user", "alice", "--max-size", "100", *base], b"Subject: x\n\n" + b"x" * 200)
    assert r.returncode == 65 and b"larger than 100 octets" in r.stderr, r
    # 75 EX_TEMPFAIL: the user database cannot be read
    r = run_deliver(postie_bin, ["--user", "alice", "--maildir", e.template, "--passwd-file", str(tmp_path / "missing")],
                    b"Subject: x\n\nx\n")
    assert r.returncode == 75 and b"cannot look up user" in r.stderr, r
    # 73 EX_CANTCREAT: a file where the Maildir should be
    (tmp_path / "blocked").write_text("not a directory")
    r = run_deliver(postie_bin, ["--user", "alice", "--maildir", str(tmp_path / "blocked" / "%u"),
                                 "--passwd-file", str(e.passwd.path)], b"Subject: x\n\nx\n")
    assert r.returncode == 73 and b"Cannot create the mailbox" in r.stderr, r
    # 74 EX_IOERR: standard input cannot be read
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        r = run_deliver(postie_bin, ["--user", "alice", *base], fd)
    finally:
        os.close(fd)
    assert r.returncode == 74 and b"reading standard input failed" in r.stderr, r
    # 64 EX_USAGE
    r = run_deliver(postie_bin, ["--user", "alice", "--passwd-file", str(e.passwd.path)], b"x\n")
    assert r.returncode == 64, r
    # Nothing of the failed attempts reached a mailbox or stayed in the spool directory.
    assert pop3_messages(e, "alice") == [b"Subject: piped\r\n\r\n.dot stays\r\nlast\r\n"]
    assert not list(spool.iterdir())


def test_listen_lmtp_from_config_file(env_factory, postie_bin, tmp_path):
    lport = free_port()
    cfg = tmp_path / "postie.yaml"
    cfg.write_text(f'listen_lmtp: ["127.0.0.1:{lport}"]\nlmtp_max_size: 12345\nlmtp_recipient: local\n')
    e = env_factory(extra=["--config", str(cfg)])
    e.lmtp_port = lport
    wait_port(lport)
    c = lmtp(e)
    assert c.esmtp_features["size"] == "12345"
    # lmtp_recipient: local: the domain is ignored.
    assert c.sendmail("s@example.org", ["alice@elsewhere.example"], b"Subject: cfg\r\n\r\nx\r\n") == {}
    c.quit()
    assert pop3_messages(e, "alice") == [b"Subject: cfg\r\n\r\nx\r\n"]
    out = subprocess.run([str(postie_bin), "config", "check", "--config", str(cfg), "--listen", "127.0.0.1:1",
                          "--passwd-file", str(e.passwd.path), "--maildir", e.template],
                         capture_output=True, text=True, timeout=30)
    assert "lmtp_max_size: 12345" in out.stdout, out.stdout + out.stderr
    assert out.returncode == 0 and "LMTP has no authentication" not in out.stderr, out.stderr
    # An LMTP listener open to the network, without an allow list, is worth a warning.
    out = subprocess.run([str(postie_bin), "config", "check", "--listen-lmtp", "0.0.0.0:24",
                          "--passwd-file", str(e.passwd.path), "--maildir", e.template],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "warning: --listen-lmtp: 0.0.0.0:24: LMTP has no authentication" in out.stderr, out.stderr
    out = subprocess.run([str(postie_bin), "config", "check", "--listen-lmtp", "0.0.0.0:24 allow=10.0.0.5/32",
                          "--passwd-file", str(e.passwd.path), "--maildir", e.template],
                         capture_output=True, text=True, timeout=30)
    assert "LMTP has no authentication" not in out.stderr, out.stderr


def test_lmtp_listener_access_list(env_factory):
    lport = free_port()
    e = env_factory(extra=["--listen-lmtp", f"127.0.0.1:{lport} deny=127.0.0.0/8"])
    wait_port(lport)  # that connection is refused and logged too
    r = RawLMTP(lport)
    assert r.greeting == "554 5.7.1 Access denied"
    assert r.reply() == "<EOF>"
    r.close()
    assert "lmtp: Info: Connection refused by access list: rip=127.0.0.1" in e.server.log_text()


def test_dovecot_serves_what_postie_delivered(dovecot, postie, postie_bin):
    """Postie's Maildir files (CRLF, `,S=,W=` names) are read by Dovecot as they are: the same
    octets and sizes from Dovecot's POP3 as from Postie's."""
    d = dovecot(users={"alice": "alice-pw"}, ssl="no")
    messages = [
        b"Subject: one\n\n.leading dot\nbare LF\n",
        b"Subject: two\r\n\r\nCRLF\r\n.\r\n..\r\nno final newline",
        b"From sender@example.org Tue Nov 14 10:00:00 2023\nSubject: three\n\n" + b"x" * 70000 + b"\n",
    ]
    template = f"{d.mail_root}/%u"
    for m in messages:
        r = run_deliver(postie_bin, ["--user", "alice", "--maildir", template, "--passwd-file", str(d.passwd_path)], m)
        assert r.returncode == 0, r.stderr
    d.fix_ownership()
    expected = [
        b"Subject: one\r\n\r\n.leading dot\r\nbare LF\r\n",
        b"Subject: two\r\n\r\nCRLF\r\n.\r\n..\r\nno final newline\r\n",
        b"Subject: three\r\n\r\n" + b"x" * 70000 + b"\r\n",
    ]

    def served(server) -> None:
        c = POP3Raw(server.host, server.port)
        c.login("alice", "alice-pw")
        assert c.listing("LIST") == {i + 1: str(len(m)) for i, m in enumerate(expected)}
        assert [c.retr(i + 1) for i in range(len(expected))] == expected
        c.ok("QUIT")
        c.close()

    served(d)
    served(postie.start(passwd=d.passwd_path, maildir=template))


def test_delivery_into_a_dovecot_maildir_takes_dovecots_next_uid(dovecot, postie, postie_bin):
    """After Dovecot has indexed a Maildir (dovecot-uidlist), `postie deliver` records the new
    message there: Dovecot and Postie then serve the same UIDL list, old and new messages alike."""
    d = dovecot(users={"alice": "alice-pw"}, ssl="no")
    for i in range(3):
        d.maildir("alice").deliver(f"Subject: old {i}\n\nbody {i}\n".encode())
    d.fix_ownership()

    def uidls(host, port):
        c = POP3Raw(host, port)
        c.login("alice", "alice-pw")
        listing = c.listing("UIDL")
        c.ok("QUIT")
        c.close()
        return listing

    before = uidls(d.host, d.port)
    assert len(before) == 3 and (d.mail_root / "alice" / "dovecot-uidlist").exists()
    template = f"{d.mail_root}/%u"
    r = run_deliver(postie_bin, ["--user", "alice", "--maildir", template, "--passwd-file", str(d.passwd_path)],
                    b"Subject: new\n\ndelivered by postie\n")
    assert r.returncode == 0, r.stderr
    d.fix_ownership()
    from_dovecot = uidls(d.host, d.port)
    assert len(from_dovecot) == 4 and {k: v for k, v in from_dovecot.items() if k <= 3} == before
    d.stop()
    s = postie.start(passwd=d.passwd_path, maildir=template)
    assert uidls(s.host, s.port) == from_dovecot


def test_sigterm_answers_421_and_delivers_nothing_half_received(env_factory):
    e = lmtp_env(env_factory)
    idle = RawLMTP(e.lmtp_port)
    idle.send(b"LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<alice>\r\n")
    assert idle.replies(3)[2] == "250 2.1.5 <alice> OK"
    mid_data = RawLMTP(e.lmtp_port)
    mid_data.send(b"LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<bob>\r\nDATA\r\n")
    assert mid_data.replies(4)[3].startswith("354")
    mid_data.send(b"Subject: interrupted\r\n\r\nhalf")
    time.sleep(0.2)
    assert e.server.stop() == 0
    for r in (idle, mid_data):
        assert r.reply() == "421 4.3.2 Server shutting down, try again later"
        assert r.reply() == "<EOF>"
        r.close()
    assert "Server shutting down in DATA; nothing delivered" in e.server.log_text()
    for user in ("alice", "bob"):
        md = Path(e.template.replace("%u", user))
        assert not md.exists() or not any((md / "new").iterdir()), f"{user} got a message"


def test_lmtp_metrics(env_factory):
    from test_ops import scrape

    mport = free_port()
    e = lmtp_env(env_factory, "--metrics", f"127.0.0.1:{mport}", "--lmtp-max-size", "1000")
    before = scrape(mport)
    for result in ("delivered", "temporary_failure", "permanent_failure", "too_big"):  # present at 0 from the start
        assert before.samples.get(("lmtp_deliveries_total", frozenset({("result", result)}))) == 0, before.text[:2000]
    c = lmtp(e)
    assert c.mail("s@example.org")[0] == 250
    assert c.rcpt("alice")[0] == 250
    assert c.rcpt("bob")[0] == 250
    assert c.rcpt("ghost")[0] == 550
    msg = b"Subject: counted\r\n\r\nx\r\n"
    assert [r[0] for r in data_replies(c, msg, 2)] == [250, 250]
    assert c.mail("s@example.org")[0] == 250
    assert c.rcpt("alice")[0] == 250
    assert data_replies(c, b"x" * 2000 + b"\r\n", 1)[0][0] == 552
    c.quit()
    s = scrape(mport)
    assert s.get("lmtp_connections_total") >= 1
    assert s.get("lmtp_recipients_total", result="accepted") == 3
    assert s.get("lmtp_recipients_total", result="unknown") == 1
    assert s.get("lmtp_deliveries_total", result="delivered") == 2
    assert s.get("lmtp_deliveries_total", result="too_big") == 1
    assert s.get("lmtp_received_bytes_total") == 2 * len(msg)
