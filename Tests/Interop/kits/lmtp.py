"""LMTP as the tests drive it: a server with a POP3 and an LMTP listener and users alice, bob
and carol@example.org, smtplib.LMTP and a raw pipelining client, the canonical form a
delivered message must have, reading it back over POP3, the server's memory, and
`postie deliver`.
"""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
from pathlib import Path

from .launcher import free_port, wait_port
from .mail import CRLF
from .pop3 import POP3Raw

CAROL = ("carol@example.org", "carol-pw")  # a user named by the whole address


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


def run_deliver(postie_bin, args: list[str], stdin) -> subprocess.CompletedProcess:
    return subprocess.run([str(postie_bin), "deliver", *args], stdin=stdin if not isinstance(stdin, bytes) else None,
                          input=stdin if isinstance(stdin, bytes) else None, capture_output=True, timeout=60)
