"""`postie serve --mbox`: /var/mail-style spools as Postfix local(8) writes them (docs/mbox.md).

poplib and curl download every message byte-exact (quoted `>From` lines as stored, a message
without a final newline, a 2 MB one) with LIST sizes equal to what RETR sends; DELE+QUIT
removes exactly those messages and keeps mail `postie deliver --to mbox:` appended during the
session; the UIDLs and bytes Debian's Dovecot pop3 serves from a spool with its X-IMAPbase and
X-UID headers are Postie's too, and qpopper's X-UIDL headers are kept; deliveries in a loop
during DELE/QUIT sessions lose and duplicate nothing; 25 SIGKILLs during QUIT-time rewriting
leave the spool as before or after that QUIT; LMTP delivers into the spool.
"""

from __future__ import annotations

import hashlib
import os
import poplib
import pwd
import random
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from kits.dovecot import ensure_vmail
from kits.launcher import HOST, free_port, wait_port
from kits.mail import ALICE, canonical_crlf, make_passwd
from kits.mbox import DATE, LAST, corpus_messages, postfix_entry, stored
from kits.pop3 import POP3Raw, login_within
from kits.tools import curl, run_postie

class MboxEnv:
    def __init__(self, tmp: Path, postie, postie_bin):
        self.root = tmp
        self.spool_dir = tmp / "spool"
        self.spool_dir.mkdir()
        self.passwd = make_passwd(tmp)
        self.template = str(self.spool_dir / "%u")
        self.postie = postie
        self.postie_bin = postie_bin
        self.server = None

    @property
    def spool(self) -> Path:
        return self.spool_dir / "alice"

    def start(self, extra: list[str] | None = None):
        self.server = self.postie.start(passwd=self.passwd.path, maildir=None, extra=["--mbox", self.template] + (extra or []))
        return self.server

    def deliver(self, message: bytes) -> None:
        r = run_postie(self.postie_bin, ["deliver", "--user", "alice", "--to", f"mbox:{self.template}",
                                         "--passwd-file", str(self.passwd.path)], stdin=message.decode())
        assert r.returncode == 0, f"postie deliver --to mbox: exit {r.returncode}: {r.stderr.decode()}"

    def session(self) -> POP3Raw:
        c, _ = login_within(HOST, self.server.port, ALICE, 30)
        return c


@pytest.fixture
def mbox(postie, postie_bin, tmp_path):
    return MboxEnv(tmp_path, postie, postie_bin)


def poplib_download(port: int) -> tuple[list[int], list[bytes], list[str]]:
    p = poplib.POP3(HOST, port, timeout=60)
    p.user(ALICE[0])
    p.pass_(ALICE[1])
    _, listing, _ = p.list()
    sizes = [int(l.split()[1]) for l in listing]
    bodies = []
    for n in range(1, len(sizes) + 1):
        _, lines, _ = p.retr(n)
        bodies.append(b"".join(l + b"\r\n" for l in lines))
    _, uidls, _ = p.uidl()
    p.quit()
    return sizes, bodies, [l.split()[1].decode() for l in uidls]


def test_poplib_and_curl_download_every_message_byte_exact(mbox):
    messages = corpus_messages()
    mbox.spool.write_bytes(b"".join(postfix_entry(m) for m in messages) + f"From bob {DATE}\n".encode() + LAST)
    mbox.start()
    expected = [canonical_crlf(stored(m)) for m in messages] + [canonical_crlf(LAST)]

    sizes, bodies, uidls = poplib_download(mbox.server.port)
    assert len(bodies) == len(expected), f"poplib sees {len(bodies)} messages, the spool holds {len(expected)}"
    for n, (size, body, want) in enumerate(zip(sizes, bodies, expected), 1):
        assert body == want, f"poplib RETR {n} differs: {body[:200]!r} vs {want[:200]!r}"
        assert size == len(body), f"LIST {n} says {size}, RETR sent {len(body)}"
    assert len(set(uidls)) == len(uidls)

    base = f"pop3://127.0.0.1:{mbox.server.port}/"
    auth = ["-u", f"{ALICE[0]}:{ALICE[1]}"]
    for n, want in enumerate(expected, 1):
        r = curl([f"{base}{n}"] + auth, timeout=60)
        assert r.returncode == 0, f"curl RETR {n}: {r.stderr.decode()}"
        assert r.stdout == want, f"curl RETR {n} differs"
    # A second login (and a restart) gives the same UIDLs; the spool was not rewritten.
    before = mbox.spool.read_bytes()
    mbox.server.stop()
    mbox.start()
    assert poplib_download(mbox.server.port)[2] == uidls, "UIDLs changed across a restart"
    assert mbox.spool.read_bytes() == before, "reading the spool changed it"
    assert not Path(str(mbox.spool) + ".lock").exists(), "a dot-lock was left behind"


def test_dele_quit_removes_exactly_those_and_keeps_mail_appended_meanwhile(mbox):
    messages = corpus_messages()[:3] + [b"Subject: four\nMessage-ID: <m4@example.org>\n\nfour\n"]
    entries = [postfix_entry(m) for m in messages]
    mbox.spool.write_bytes(b"".join(entries))
    os.chmod(mbox.spool, 0o660)
    owner = (65534, 8) if os.getuid() == 0 else (os.getuid(), os.getgid())
    os.chown(mbox.spool, *owner)
    mbox.start()
    c = mbox.session()
    assert c.stat()[0] == 4
    c.ok("DELE 1")
    c.ok("DELE 3")
    # The MTA delivers while the session is open: never blocked by it, and kept by its QUIT.
    t0 = time.monotonic()
    mbox.deliver(b"Subject: late\nMessage-ID: <late@example.org>\n\nFrom the MTA\n")
    assert time.monotonic() - t0 < 10, "delivery waited for the POP3 session"
    c.ok("QUIT")
    data = mbox.spool.read_bytes()
    assert data.startswith(entries[1] + entries[3]), f"kept messages changed: {data[:400]!r}"
    tail = data[len(entries[1] + entries[3]):]
    assert re.fullmatch(rb"From MAILER-DAEMON [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
                        rb"Subject: late\nMessage-ID: <late@example.org>\n\n>From the MTA\n\n", tail), tail
    st = os.stat(mbox.spool)
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o660, *owner), "the spool lost its mode or owner"
    left = [p.name for p in mbox.spool_dir.iterdir()]
    assert sorted(left) == ["alice", "alice.postie-lock", "alice.postie-uidl"], left
    c = mbox.session()
    assert c.stat()[0] == 3
    c.ok("QUIT")


def dovecot_pop3(spool: Path, commands: list[str]) -> list[bytes]:
    """Runs Debian's Dovecot pop3 binary pre-authenticated on a copy of `spool` owned by vmail
    (in a world-traversable directory: pytest's temp root is 0700) and returns its output lines."""
    binary = Path("/usr/lib/dovecot/pop3")
    assert binary.exists(), "Dovecot's pop3 is missing (dovecot-pop3d; scripts/test installs it)"
    vmail = ensure_vmail()
    workdir = Path(tempfile.mkdtemp(prefix="postie-dovecot-mbox-"))
    try:
        return _dovecot_pop3(binary, spool, commands, workdir, vmail)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _dovecot_pop3(binary: Path, spool: Path, commands: list[str], workdir: Path, vmail) -> list[bytes]:
    home = workdir / "dovecot-home"
    home.mkdir(mode=0o755)
    inbox = home / "inbox"
    shutil.copyfile(spool, inbox)
    conf = workdir / "dovecot.conf"
    conf.write_text(f"base_dir = {workdir}/dovecot-run\nlog_path = {workdir}/dovecot.log\nprotocols = pop3\n"
                    f"mail_location = mbox:{home}:INBOX={inbox}\nssl = no\n")
    for p in (workdir, home, inbox, conf):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    for p in (workdir, home, inbox):
        os.chown(p, vmail.pw_uid, vmail.pw_gid)
    script = "".join(f"{c}\r\n" for c in commands).encode()
    r = subprocess.run(["runuser", "-u", "vmail", "--", "env", "USER=alice", f"HOME={home}", str(binary), "-c", str(conf)],
                       input=script, capture_output=True, timeout=60)
    assert r.returncode == 0, f"dovecot pop3 failed: {r.stderr.decode()} {(workdir / 'dovecot.log').read_text() if (workdir / 'dovecot.log').exists() else ''}"
    return r.stdout.split(b"\r\n")


def test_dovecots_uidls_and_bytes_on_a_spool_it_numbered(mbox):
    """Debian's Dovecot pop3 and Postie serve the same spool with the same UIDLs and bytes."""
    mbox.spool.write_bytes(
        postfix_entry(b"Status: RO\nX-IMAPbase: 1796174290 0000000004\nX-UID: 1\nContent-Length: 3\nX-UIDL: abc\n"
                      b"Subject: a\n\n>From a\n")
        + postfix_entry(b"X-UID: 2\nStatus: O\nX-Keywords: $Label1\nSubject: b\n\nb\n")
        + postfix_entry(b"X-UID: 3\nX-Status: A\nSubject: c\n\nc\n"))
    n = 3
    out = dovecot_pop3(mbox.spool, ["UIDL"] + [f"RETR {i}" for i in range(1, n + 1)] + ["QUIT"])
    # Pre-authenticated, Dovecot sends no greeting: the UIDL reply comes first.
    assert out[0].startswith(b"+OK") and out[1 + n] == b".", out[:6]
    dovecot_uidls = [l.decode().split()[1] for l in out[1:1 + n]]
    assert dovecot_uidls == ["000000016b0f71d2", "000000026b0f71d2", "000000036b0f71d2"], out[:6]
    dovecot_bodies = []
    lines = iter(out[2 + n:])
    for _ in range(n):
        assert next(lines).startswith(b"+OK")
        body = []
        for l in lines:
            if l == b".":
                break
            body.append(l[1:] if l.startswith(b"..") else l)
        dovecot_bodies.append(b"".join(l + b"\r\n" for l in body))
    mbox.start()
    _, bodies, uidls = poplib_download(mbox.server.port)
    assert uidls == dovecot_uidls
    assert bodies == dovecot_bodies


def test_qpoppers_xuidl_headers_are_kept(mbox):
    mbox.spool.write_bytes(b"".join(postfix_entry(b"X-UIDL: 9f3c%04d5e1a2b7c\nSubject: %d\n\nbody\n" % (i, i)) for i in range(3)))
    mbox.start(["--pop3-reuse-xuidl"])
    _, _, uidls = poplib_download(mbox.server.port)
    assert uidls == ["9f3c00005e1a2b7c", "9f3c00015e1a2b7c", "9f3c00025e1a2b7c"]


def numbered(i: int, padding: int = 0) -> bytes:
    body = f"message {i}\n" + "x" * random.Random(i).randint(10, 3000) + "\n" + "y" * padding + ("\n" if padding else "")
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f"Subject: {i}\nMessage-ID: <{i}@loop.example>\nX-Body-SHA256: {digest}\n\n{body}".encode()


def check_message(raw: bytes) -> str:
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    mid = re.search(rb"Message-ID: <([^>]+)>", head).group(1).decode()
    want = re.search(rb"X-Body-SHA256: (\w+)", head).group(1).decode()
    assert hashlib.sha256(body).hexdigest() == want, f"{mid}: body corrupted"
    return mid


def test_deliveries_in_a_loop_during_dele_quit_sessions_lose_nothing(mbox):
    mbox.start()
    total = 40
    done = threading.Event()
    failures = []

    def deliver_all():
        try:
            for i in range(total):
                mbox.deliver(numbered(i))
        except AssertionError as e:
            failures.append(str(e))
        finally:
            done.set()

    t = threading.Thread(target=deliver_all)
    t.start()
    seen: list[str] = []
    while True:
        finished = done.is_set()
        c = mbox.session()
        count = c.stat()[0]
        for n in range(1, count + 1):
            seen.append(check_message(c.retr(n)))
            c.ok(f"DELE {n}")
        c.ok("QUIT")
        if finished:
            break
    t.join()
    assert not failures, failures
    assert sorted(seen) == sorted(f"{i}@loop.example" for i in range(total)), \
        f"lost: {set(f'{i}@loop.example' for i in range(total)) - set(seen)}; duplicated: {[m for m in seen if seen.count(m) > 1]}"
    assert mbox.spool.read_bytes() == b"", "the spool should be empty after every message was deleted"


def spool_message_ids(path: Path) -> list[str]:
    """Parses the spool independently (From lines after a blank line) and checks each body."""
    data = path.read_bytes()
    if data.endswith(b"\n\n"):
        data = data[:-1]  # the last message's blank separator line
    ids = []
    for part in re.split(rb"(?:^|\n\n)From [^\n]*\n", data):
        if part.strip():
            ids.append(check_message(part if part.endswith(b"\n") else part + b"\n"))
    return ids


def test_sigkill_during_quit_leaves_the_spool_before_or_after(mbox):
    rng = random.Random(20)
    everything = [f"{i}@loop.example" for i in range(120)]
    mbox.spool.write_bytes(b"".join(postfix_entry(numbered(i, padding=40_000)) for i in range(120)))
    mbox.start()
    present = list(everything)
    outcomes = {"before": 0, "after": 0, "killed mid-rewrite": 0}
    for round_ in range(25):
        c = mbox.session()
        count = c.stat()[0]
        uidl = c.listing("UIDL")
        doomed_numbers = sorted(rng.sample(range(1, count + 1), max(1, count // 6)))
        doomed = {present[n - 1] for n in doomed_numbers}
        for n in doomed_numbers:
            c.ok(f"DELE {n}")
        c.sendline("QUIT")
        time.sleep(rng.uniform(0, 0.08))
        os.kill(mbox.server.pid, signal.SIGKILL)
        mbox.server.stop()
        lockfile = Path(str(mbox.spool) + ".lock")
        assert not lockfile.exists() or lockfile.read_bytes().endswith(b"\n"), "a dot-lock without its PID:HOSTNAME"
        if Path(str(mbox.spool) + ".postie-new").exists():
            outcomes["killed mid-rewrite"] += 1
        ids = spool_message_ids(mbox.spool)
        if ids == present:
            outcomes["before"] += 1
        else:
            assert ids == [m for m in present if m not in doomed], f"round {round_}: neither before nor after that QUIT"
            outcomes["after"] += 1
            present = ids
        mbox.start()
        # The dead server's dot-lock (if any) is taken over at once; UIDLs are unchanged.
        c = mbox.session()
        again = c.listing("UIDL")
        assert set(again.values()) <= set(uidl.values()), "a kept message got a new UIDL"
        c.ok("QUIT")
    print(f"SIGKILL during QUIT: {outcomes}")


def test_lmtp_delivers_into_the_spool(mbox):
    """The MTA's LMTP delivery (RFC 2033) appends to the spool as `postie deliver` does."""
    lport = free_port()
    mbox.spool.write_bytes(postfix_entry(b"Subject: before\nMessage-ID: <b@example.org>\n\nb\n"))
    mbox.start(["--listen-lmtp", f"127.0.0.1:{lport}"])
    wait_port(lport)
    c = smtplib.LMTP("127.0.0.1", lport, timeout=60)
    assert c.ehlo()[0] == 250
    message = b"Subject: by lmtp\r\nMessage-ID: <l@example.org>\r\n\r\nFrom a body line\r\n..dot\r\n"
    c.mail("sender@example.org")
    assert c.rcpt("alice")[0] == 250
    assert c.rcpt("nobody")[0] == 550
    code, _ = c.data(message)  # smtplib dot-stuffs; the message holds "..dot"
    assert code == 250
    c.quit()
    _, bodies, _ = poplib_download(mbox.server.port)
    assert bodies == [b"Subject: before\r\nMessage-ID: <b@example.org>\r\n\r\nb\r\n",
                      b"Subject: by lmtp\r\nMessage-ID: <l@example.org>\r\n\r\n>From a body line\r\n..dot\r\n"]
