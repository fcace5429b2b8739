"""Measurements the load generator does not make: the first and later STAT+UIDL of a
big mailbox, and the memory of many idle authenticated sessions.

Both use the same plain-socket client against either server, so the client's own cost
is the same on both sides of every ratio.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path


class LineClient:
    """A minimal blocking POP3 client that reads multi-line replies in big chunks."""

    def __init__(self, host: str, port: int, timeout: float = 600, wrap=None):
        """`wrap` turns the connected socket into another one first (e.g. a TLS socket)."""
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = wrap(raw) if wrap else raw
        self.buf = b""
        self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        reply = self.line()
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"{text.split()[0]}: {reply!r}")
        return reply

    def multiline(self, text: str) -> int:
        """Sends a command with a multi-line reply; returns the number of lines."""
        body = self.multiline_data(text)
        return body.count(b"\r\n") + 1 if body else 0

    def multiline_data(self, text: str) -> bytes:
        """Sends a command with a multi-line reply; returns its lines (CRLF between them,
        still dot-stuffed) without the terminating `.`.

        Searches only the newly received bytes for the end, so a 100,000-line reply costs
        the client linear time, whatever the server."""
        self.command(text)
        data = bytearray(self.buf)
        searched = 0
        while True:
            if data.startswith(b".\r\n"):
                self.buf = bytes(data[3:])
                return b""
            end = data.find(b"\r\n.\r\n", max(0, searched - 4))
            if end >= 0:
                self.buf = bytes(data[end + 5:])
                return bytes(data[:end])
            searched = len(data)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk

    def close(self) -> None:
        try:
            self.command("QUIT")
        finally:
            self.sock.close()


def stat_uidl(host: str, port: int, user: str, password: str) -> tuple[float, int]:
    """Seconds from connect to the end of UIDL (USER, PASS, STAT, UIDL), and the UIDL count."""
    t0 = time.perf_counter()
    c = LineClient(host, port)
    c.command(f"USER {user}")
    c.command(f"PASS {password}")
    c.command("STAT")
    n = c.multiline("UIDL")
    elapsed = time.perf_counter() - t0
    c.close()
    return elapsed, n


def process_stats():
    """(pid, fields) for every live process: the fields of /proc/PID/stat after the command
    name, which may hold spaces (proc(5): the parent's pid is fields[1], utime and stime are
    fields[11] and fields[12])."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), fields


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for child, fields in process_stats():
        children.setdefault(int(fields[1]), []).append(child)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_kib(pid: int) -> int:
    """Resident memory of a process tree in KiB (VmRSS summed)."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


async def _idle_session(host: str, port: int, user: str, password: str, gate: asyncio.Semaphore):
    async with gate:
        reader, writer = await asyncio.open_connection(host, port)
        await reader.readline()
        writer.write(f"USER {user}\r\nPASS {password}\r\n".encode())
        await writer.drain()
        r1 = await reader.readline()
        r2 = await reader.readline()
        if not (r1.startswith(b"+OK") and r2.startswith(b"+OK")):
            writer.close()
            raise RuntimeError(f"login failed: {r1!r} {r2!r}")
    return reader, writer


async def _hold(host: str, port: int, logins: list[tuple[str, str]], count: int, server_pid: int,
                settle: float) -> dict:
    before = rss_kib(server_pid)
    gate = asyncio.Semaphore(64)
    tasks = [asyncio.create_task(_idle_session(host, port, *logins[i % len(logins)], gate)) for i in range(count)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    held = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    await asyncio.sleep(settle)
    during = rss_kib(server_pid)
    for _, w in held:
        w.write(b"QUIT\r\n")
    for _, w in held:
        w.close()
    return {"sessions": len(held), "errors": len(errors), "first_error": errors[0] if errors else None,
            "rss_before_kib": before, "rss_during_kib": during,
            "per_session_kib": (during - before) / len(held) if held else None}


def idle_sessions(host: str, port: int, logins: list[tuple[str, str]], count: int, server_pid: int,
                  settle: float = 3.0) -> dict:
    """Opens `count` authenticated sessions that then sit idle, and measures the server's RSS."""
    return asyncio.run(_hold(host, port, logins, count, server_pid, settle))
