"""The suite's one scripted POP3 server, for testing Postie's client side (check, fetch,
migrate) against a server that misbehaves on purpose.

A `ScriptedServer` listens on loopback, greets, reads command lines and hands each to
`command(session, word, args)`. The base class answers CAPA from `capabilities`, the
commands in `replies` with a fixed line, QUIT with `+OK bye` (ending the session) and
anything else with `unknown`; a test subclasses it and overrides `command` for the part
it scripts, falling back to `super().command(...)`. Every command line is recorded in
`commands` (the PASS argument left out).

Standard library only.
"""

from __future__ import annotations

import socket
import ssl
import threading

from .launcher import HOST
from .mail import canonical_crlf, dot_stuff


class ScriptedSession:
    """One connection: a line reader with its own buffer, so that bytes that arrived before
    a TLS handshake stay visible after it (see `starttls`)."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.tls: ssl.SSLSocket | None = None
        self.pending = b""
        self.marked: list[int] = []  # for a server that scripts DELE: marked in this session

    @property
    def sock(self) -> socket.socket:
        return self.tls or self.conn

    def readline(self) -> str | None:
        """The next command line without its line end; None at EOF."""
        while b"\n" not in self.pending:
            data = self.sock.recv(4096)
            if not data:
                return None
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, *lines: str) -> None:
        """Each line with CRLF, in one write."""
        self.send(b"".join(l.encode() + b"\r\n" for l in lines))

    def listing(self, lines: list[str]) -> None:
        """`+OK`, the lines, `.`."""
        self.reply("+OK", *lines, ".")

    def message(self, data: bytes) -> None:
        """`+OK` and the message as RETR sends it: canonical CRLF, dot-stuffed, terminated."""
        self.send(b"+OK\r\n" + dot_stuff(canonical_crlf(data)))

    def starttls(self, ctx: ssl.SSLContext, keep_pending: bool = False) -> None:
        """The server side of the handshake. A correct server drops what the client sent
        before it (`keep_pending=False`); keeping it is the CVE-2011-0411 mistake."""
        if not keep_pending:
            self.pending = b""
        self.tls = ctx.wrap_socket(self.conn, server_side=True)


class ScriptedServer:
    """A POP3 server whose every reply is scripted (see the module doc)."""

    greeting = "+OK scripted"
    capabilities: list[str] = ["UIDL", "USER"]
    replies: dict[str, str] = {"USER": "+OK", "PASS": "+OK", "NOOP": "+OK"}
    unknown = "-ERR unknown"

    def __init__(self, *, concurrent: bool = False, timeout: float | None = None, backlog: int = 4):
        """`concurrent`: a thread per connection (else one session at a time);
        `timeout`: for each connection's reads."""
        self.concurrent = concurrent
        self.timeout = timeout
        self.commands: list[str] = []
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(backlog)
        self.host = HOST
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    # -- to override -----------------------------------------------------
    def command(self, s: ScriptedSession, word: str, args: list[str]) -> bool:
        """Answers one command (`word` upper-cased); returns False to end the session."""
        if word == "CAPA":
            s.listing(self.capabilities)
        elif word in self.replies:
            s.reply(self.replies[word])
        elif word == "QUIT":
            s.reply("+OK bye")
            return False
        else:
            s.reply(self.unknown)
        return True

    # -- the machinery ---------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.concurrent:
                threading.Thread(target=self._session, args=(conn,), daemon=True).start()
            else:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        s = ScriptedSession(conn)
        try:
            conn.settimeout(self.timeout)
            s.reply(self.greeting)
            while True:
                line = s.readline()
                if line is None:
                    return
                words = line.strip().split()
                word, args = (words[0].upper(), words[1:]) if words else ("", [])
                self.commands.append(" ".join([word] + (args[:1] if word != "PASS" else [])))
                if not self.command(s, word, args):
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            (s.tls or conn).close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
