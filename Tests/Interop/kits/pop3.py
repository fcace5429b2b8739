"""The suite's one raw POP3 client: a socket, its own read buffer and strict framing.

Every test that speaks POP3 by hand uses `POP3Raw`: plain or implicit TLS (`tls=`), STLS on
the same socket (`starttls`, which also checks that nothing arrived in plaintext after the
`+OK`), a chosen loopback source address (`source=`), exact wire bytes
(`read_multiline_wire`), huge bodies hashed as they stream (`read_multiline_digest`), and a
transcript for failure messages.

Standard library only.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time

from .mail import CRLF, sha

LINE_LIMIT = 1 << 20


class ProtocolError(AssertionError):
    pass


class POP3Raw:
    """A minimal POP3 client over a socket that checks framing strictly: every server line
    must end in CRLF (a bare LF or a line over 1 MiB is a ProtocolError)."""

    def __init__(self, host: str, port: int, *, timeout: float = 15.0, read_greeting: bool = True,
                 source: str | None = None, tls: ssl.SSLContext | None = None,
                 server_hostname: str | None = "localhost"):
        """`source`: a loopback source address such as 127.0.0.7, so that per-IP login
        throttling in one test does not leak into the next connection. `tls`: implicit TLS
        (port 995 style) with this client context."""
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
        self._buf = bytearray()
        self._pos = 0
        self.transcript: list[str] = []
        self.greeting = self.readline() if read_greeting else None

    # -- raw I/O ---------------------------------------------------------
    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.transcript.append(f"C: {data[:200]!r}")
        self.sock.sendall(data)

    def sendline(self, line: bytes | str) -> None:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + CRLF)

    def _fill(self) -> bool:
        """One recv into the buffer; False at EOF (a reset counts as EOF)."""
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            chunk = b""
        if not chunk:
            return False
        if self._pos > 65536:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += chunk
        return True

    @property
    def buffered(self) -> bytes:
        """What arrived and was not read yet."""
        return bytes(self._buf[self._pos:])

    def _take(self, end: int) -> bytes:
        out = bytes(self._buf[self._pos:end])
        self._pos = end
        return out

    def readline_raw(self, limit: int = LINE_LIMIT) -> bytes:
        """One line including its LF (at most `limit` octets); b'' at EOF."""
        scanned = 0  # octets after _pos known to hold no LF (_fill may move _pos)
        while True:
            i = self._buf.find(b"\n", self._pos + scanned, self._pos + limit)
            if i >= 0:
                return self._take(i + 1)
            if len(self._buf) - self._pos >= limit:
                return self._take(self._pos + limit)
            scanned = len(self._buf) - self._pos
            if not self._fill():
                return self._take(len(self._buf))

    def read_bytes(self, n: int) -> bytes:
        """Exactly `n` octets, fewer only at EOF."""
        while len(self._buf) - self._pos < n and self._fill():
            pass
        return self._take(min(len(self._buf), self._pos + n))

    def readline(self) -> bytes:
        """One line without CRLF; raises EOFError at EOF and ProtocolError for a bare LF."""
        line = self.readline_raw()
        if not line:
            self.transcript.append("S: <EOF>")
            raise EOFError(f"server closed the connection (transcript: {self.tail()})")
        if not line.endswith(CRLF):
            raise ProtocolError(f"server line not terminated by CRLF: {line[:200]!r}")
        self.transcript.append(f"S: {line[:200]!r}")
        return line[:-2]

    def reply(self) -> str:
        return self.readline().decode("utf-8", "replace")

    def tail(self, n: int = 12) -> str:
        return " | ".join(self.transcript[-n:])

    # -- commands --------------------------------------------------------
    def cmd(self, line: str | bytes) -> str:
        self.sendline(line)
        return self.reply()

    def ok(self, line: str | bytes) -> str:
        r = self.cmd(line)
        if not r.startswith("+OK"):
            raise ProtocolError(f"{line!r} got {r!r}, expected +OK (transcript: {self.tail()})")
        return r

    def read_multiline(self) -> list[bytes]:
        """Reads a multi-line body after a +OK status line; returns the unstuffed lines."""
        lines = []
        while True:
            line = self.readline()
            if line == b".":
                return lines
            if line.startswith(b"."):
                line = line[1:]
            lines.append(line)

    def read_multiline_wire(self) -> bytes:
        """Reads a multi-line body and returns it exactly as sent (still stuffed, with '.CRLF')."""
        out = []
        while True:
            line = self.readline_raw()
            if not line:
                raise EOFError("EOF inside a multi-line response")
            out.append(line)
            if line == b".\r\n":
                return b"".join(out)

    def read_multiline_digest(self, each_line=None) -> tuple[int, str]:
        """Reads a (huge) multi-line body without keeping it: the size and SHA-256 of the
        unstuffed CRLF message. `each_line(k)` is called after the k-th line (k from 1)."""
        h = hashlib.sha256()
        size = k = 0
        while True:
            line = self.readline_raw()
            if not line.endswith(CRLF):
                raise ProtocolError(f"line without CRLF at octet {size}: {line[:80]!r}")
            if line == b".\r\n":
                return size, h.hexdigest()
            if line.startswith(b"."):
                line = line[1:]
            h.update(line)
            size += len(line)
            k += 1
            if each_line is not None:
                each_line(k)

    def multi(self, line: str | bytes) -> tuple[str, list[bytes]]:
        r = self.cmd(line)
        if not r.startswith("+OK"):
            return r, []
        return r, self.read_multiline()

    def retr(self, n: int) -> bytes:
        """RETR n; returns the message in canonical CRLF form (unstuffed)."""
        r, lines = self.multi(f"RETR {n}")
        if not r.startswith("+OK"):
            raise ProtocolError(f"RETR {n} got {r!r}")
        return b"".join(l + CRLF for l in lines)

    def top(self, n: int, lines: int) -> bytes:
        r, body = self.multi(f"TOP {n} {lines}")
        if not r.startswith("+OK"):
            raise ProtocolError(f"TOP {n} {lines} got {r!r}")
        return b"".join(l + CRLF for l in body)

    def capa(self) -> list[str]:
        r, lines = self.multi("CAPA")
        if not r.startswith("+OK"):
            raise ProtocolError(f"CAPA got {r!r}")
        return [l.decode("utf-8") for l in lines]

    def login(self, user: str, password: str) -> str:
        self.ok(f"USER {user}")
        return self.ok(f"PASS {password}")

    def try_login(self, user: str, password: str) -> str:
        """USER+PASS; returns the last reply (+OK or -ERR) instead of raising."""
        r = self.cmd(f"USER {user}")
        if not r.startswith("+OK"):
            return r
        return self.cmd(f"PASS {password}")

    def listing(self, what: str = "UIDL") -> dict[int, str]:
        r, lines = self.multi(what)
        if not r.startswith("+OK"):
            raise ProtocolError(f"{what} got {r!r}")
        out = {}
        for l in lines:
            parts = l.decode().split()
            if len(parts) != 2:
                raise ProtocolError(f"{what}: malformed line {l!r}")
            n = int(parts[0])
            if n in out:
                raise ProtocolError(f"{what}: message {n} listed twice")
            out[n] = parts[1]
        return out

    def stat(self) -> tuple[int, int]:
        r = self.ok("STAT")
        parts = r.split()
        return int(parts[1]), int(parts[2])

    def quit(self) -> str:
        return self.cmd("QUIT")

    # -- TLS -------------------------------------------------------------
    def starttls(self, ctx: ssl.SSLContext, server_hostname: str | None = "localhost") -> None:
        """The TLS handshake on the same socket, after the client read `+OK` to STLS."""
        if self.buffered:
            raise ProtocolError(f"the server sent plaintext after its STLS reply: {self.buffered[:200]!r}")
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)

    @property
    def cipher(self):
        return self.sock.cipher() if isinstance(self.sock, ssl.SSLSocket) else None

    @property
    def version(self):
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None

    def peercert(self) -> dict:
        return self.sock.getpeercert()

    # -- the end ---------------------------------------------------------
    def expect_closed(self, timeout: float = 5.0) -> bytes:
        """Waits for EOF (or a reset); returns whatever came before it. Raises if the socket stays open."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self._fill():
                    return self._take(len(self._buf))
        except socket.timeout:
            pass
        raise ProtocolError(f"connection still open after {timeout}s (received {self.buffered[:200]!r})")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Drops the connection with a TCP RST (no QUIT)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def received_until_close(port: int, data: bytes = b"", *, host: str = "127.0.0.1", source: str | None = None,
                         timeout: float = 5.0) -> bytes:
    """Connects without reading a greeting, sends `data` (unless the server has already
    closed), and returns everything received until the server closes; raises if it stays open."""
    with POP3Raw(host, port, source=source, read_greeting=False, timeout=timeout) as c:
        if data:
            try:
                c.send(data)
            except OSError:
                pass
        return c.expect_closed(timeout)


def in_use(reply: str) -> bool:
    return reply.startswith("-ERR [IN-USE]")


def login_within(host: str, port: int, user, timeout: float) -> tuple[POP3Raw, float]:
    """Logs in, retrying while the mailbox is [IN-USE]; returns the session and the wait."""
    t0 = time.monotonic()
    while True:
        c = POP3Raw(host, port)
        r = c.try_login(*user)
        if r.startswith("+OK"):
            return c, time.monotonic() - t0
        c.close()
        if not in_use(r) or time.monotonic() - t0 > timeout:
            raise ProtocolError(f"login as {user[0]} still fails after {time.monotonic() - t0:.1f}s: {r!r}")
        time.sleep(0.1)


def snapshot(c: POP3Raw) -> dict[str, str]:
    """UIDL -> sha256 of the canonical CRLF message for every message in the session.

    Uses pipelining: all RETRs are sent at once, then answered in order.
    Raises if a UIDL or a content hash appears twice.
    """
    uidl = c.listing("UIDL")
    sizes = c.listing("LIST")
    if set(uidl) != set(sizes):
        raise ProtocolError(f"UIDL numbers {sorted(uidl)[:10]} != LIST numbers {sorted(sizes)[:10]}")
    nums = sorted(uidl)
    c.send(b"".join(b"RETR %d\r\n" % n for n in nums))
    out: dict[str, str] = {}
    seen_hash: dict[str, str] = {}
    for n in nums:
        r = c.reply()
        if not r.startswith("+OK"):
            raise ProtocolError(f"RETR {n} (pipelined) got {r!r}")
        body = b"".join(l + CRLF for l in c.read_multiline())
        if len(body) != int(sizes[n]):
            raise ProtocolError(f"message {n} (UIDL {uidl[n]}): LIST says {sizes[n]} octets, RETR gave {len(body)}")
        u = uidl[n]
        h = sha(body)
        if u in out:
            raise ProtocolError(f"UIDL {u} appears twice")
        if h in seen_hash:
            raise ProtocolError(f"the same message content appears twice, as UIDL {seen_hash[h]} and {u}")
        seen_hash[h] = u
        out[u] = h
    return out


def busy_wait(seconds: float) -> None:
    """Waits `seconds` precisely (sleep, then spin the last 3 ms): the fault tests aim kills
    at moments a few milliseconds apart."""
    end = time.perf_counter() + seconds
    if seconds > 0.005:
        time.sleep(seconds - 0.003)
    while time.perf_counter() < end:
        pass


def read_quit_reply(c: "POP3Raw", timeout: float = 3.0) -> str | None:
    """The reply to QUIT if one arrived (before or after the kill), else None."""
    c.sock.settimeout(timeout)
    try:
        return c.reply()
    except (EOFError, ConnectionError, socket.timeout, OSError):
        return None
