"""Helpers for the Postie interop tests: server process control, Maildir
delivery, passwd-file writing, a raw POP3 client and the message corpus.

Standard library only.

What "byte-exact" means in this suite
-------------------------------------
A Maildir file is stored the way an MTA writes it: lines end in LF.  On the
wire POP3 sends the *canonical CRLF form* of the file (`canonical_crlf`):

* every LF becomes CRLF;
* a non-empty file that does not end in LF gets CRLF appended (so the last
  line is terminated; the bytes of the file are otherwise unchanged);
* a 0-byte file is a 0-byte message.

STAT/LIST sizes are the length of that canonical form, before dot-stuffing.
A client that undoes the transport encoding (drops the final ".CRLF" line and
one leading '.' of every line that starts with '.') must end up with exactly
`canonical_crlf(file)`.  A client that also turns CRLF back into LF (fetchmail
delivering to an MDA) must end up with exactly `canonical_lf(file)`, i.e. the
file itself, plus one LF if the file did not end with one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

CRLF = b"\r\n"

# --------------------------------------------------------------------------
# Canonical forms
# --------------------------------------------------------------------------


def canonical_crlf(data: bytes) -> bytes:
    """The exact octets a client must receive for a Maildir file (see module doc)."""
    out = data.replace(b"\n", b"\r\n")
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def canonical_lf(data: bytes) -> bytes:
    """What a client that converts CRLF to LF must end up with."""
    if data and not data.endswith(b"\n"):
        return data + b"\n"
    return data


def dot_stuff(crlf: bytes) -> bytes:
    """RFC 1939 section 3 byte-stuffing of a canonical CRLF message, plus terminator."""
    if not crlf:
        return b".\r\n"
    lines = crlf[:-2].split(b"\r\n")
    out = [(b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines]
    return b"".join(out) + b".\r\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class StreamDigest:
    """Size and SHA-256 of both canonical forms of a (possibly huge) file."""

    path: Path
    lf_size: int
    lf_sha: str
    crlf_size: int
    crlf_sha: str


def digest_file(path: Path, chunk: int = 1 << 20) -> StreamDigest:
    """Digests a Maildir file in chunks without loading it whole."""
    lf, crlf = hashlib.sha256(), hashlib.sha256()
    lf_size = crlf_size = 0
    last = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            assert b"\r" not in block, f"{path}: test corpus files must not contain CR"
            lf.update(block)
            lf_size += len(block)
            c = block.replace(b"\n", b"\r\n")
            crlf.update(c)
            crlf_size += len(c)
            last = block[-1:]
    if lf_size and last != b"\n":
        lf.update(b"\n")
        lf_size += 1
        crlf.update(b"\r\n")
        crlf_size += 2
    return StreamDigest(path, lf_size, lf.hexdigest(), crlf_size, crlf.hexdigest())


def digest_bytes(data: bytes) -> StreamDigest:
    c = canonical_crlf(data)
    l = canonical_lf(data)
    return StreamDigest(Path("-"), len(l), sha(l), len(c), sha(c))


def hash_fileobj(f, chunk: int = 1 << 20) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while True:
        b = f.read(chunk)
        if not b:
            break
        h.update(b)
        n += len(b)
    return n, h.hexdigest()


def hash_path(p: Path) -> tuple[int, str]:
    with open(p, "rb") as f:
        return hash_fileobj(f)


# --------------------------------------------------------------------------
# Message corpus
# --------------------------------------------------------------------------

HDR = b"From: Sender <sender@example.org>\nTo: alice@example.org\nDate: Tue, 14 Nov 2023 10:00:00 +0000\n"


def corpus() -> dict[str, bytes]:
    """The small messages every client must download byte-exact (names are ours, not the server's)."""
    msgs: dict[str, bytes] = {}
    msgs["dots"] = (
        HDR + b"Subject: dots\nMessage-ID: <dots@example.org>\n\n"
        b".\n..\n...\n.leading dot\n..two leading dots\n. dot space\nmiddle . dot\n"
        b"\n.\n.\n..\nlast line\n.\n"
    )
    msgs["empty-body"] = HDR + b"Subject: empty body\nMessage-ID: <empty-body@example.org>\n\n"
    msgs["utf8"] = (
        HDR
        + "Subject: Grüße aus Köln — 日本語 ✉\nMessage-ID: <utf8@example.org>\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        "naïve café, Ελληνικά, Русский, 中文, עברית, emoji 📬🦉\n"
        ".Ünïcode after a leading dot\n"
        "\u00a0non-breaking space line\n".encode("utf-8")
    )
    msgs["8bit-raw"] = (
        HDR + b"Subject: raw 8-bit octets\nMessage-ID: <raw8@example.org>\n\n"
        + bytes(range(0x80, 0x100))
        + b"\n"
        + bytes(b for b in range(0x01, 0x20) if b not in (0x0A, 0x0D))
        + b"\n"
    )
    msgs["long-line"] = (
        HDR + b"Subject: a 5000-character line\nMessage-ID: <long@example.org>\n\n"
        + b"".join(bytes([0x61 + i % 26]) for i in range(5000))
        + b"\n."
        + b"y" * 4999
        + b"\nshort\n"
    )
    msgs["no-final-newline"] = (
        HDR + b"Subject: no final newline\nMessage-ID: <nofinal@example.org>\n\nfirst\nlast line without newline"
    )
    msgs["no-final-newline-dot"] = (
        HDR + b"Subject: no final newline, last line is a dot\nMessage-ID: <nofinaldot@example.org>\n\nx\n."
    )
    return msgs


ZERO_BYTE = b""


def numbered_message(i: int, rng: random.Random, size: int | None = None) -> bytes:
    """A small distinct message for bulk tests."""
    if size is None:
        size = rng.choice([200, 600, 1500, 4000, 12000])
    head = (
        f"From: bulk@example.org\nTo: alice@example.org\nSubject: bulk {i}\n"
        f"Message-ID: <bulk-{i}-{rng.getrandbits(32):08x}@example.org>\n\n"
    ).encode()
    body = []
    n = len(head)
    k = 0
    while n < size:
        line = (("." if k % 7 == 3 else "") + f"{i}:{k} " + "z" * rng.randrange(0, 90)).encode() + b"\n"
        body.append(line)
        n += len(line)
        k += 1
    return head + b"".join(body)


def write_big_message(path: Path, target_size: int = 105 * 1024 * 1024, seed: int = 1939) -> StreamDigest:
    """Writes a >100 MB message of LF lines (many starting with '.') and returns its digests.

    A 1 MiB block of random-length lines is generated once; each copy is
    preceded by a distinct counter line so that a dropped, duplicated or
    reordered chunk changes the hash.
    """
    rng = random.Random(seed)
    lines = []
    total = 0
    while total < (1 << 20):
        kind = rng.random()
        n = rng.randrange(0, 200)
        body = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(n))
        if kind < 0.08:
            line = b"." + body
        elif kind < 0.10:
            line = b".." + body
        elif kind < 0.11:
            line = b"."
        elif kind < 0.12:
            line = b""
        else:
            line = body
        lines.append(line + b"\n")
        total += len(line) + 1
    block = b"".join(lines)
    head = (
        HDR + b"Subject: a message over 100 MB\nMessage-ID: <big@example.org>\n\n"
    )
    lf, crlf = hashlib.sha256(), hashlib.sha256()
    lf_size = crlf_size = 0

    def put(f, data: bytes) -> None:
        nonlocal lf_size, crlf_size
        f.write(data)
        lf.update(data)
        lf_size += len(data)
        c = data.replace(b"\n", b"\r\n")
        crlf.update(c)
        crlf_size += len(c)

    with open(path, "wb") as f:
        put(f, head)
        i = 0
        while lf_size < target_size:
            put(f, b".chunk %06d\n" % i)
            put(f, block)
            i += 1
        put(f, b"..end of the big message\n")
    return StreamDigest(path, lf_size, lf.hexdigest(), crlf_size, crlf.hexdigest())


# --------------------------------------------------------------------------
# Maildir and passwd-file
# --------------------------------------------------------------------------

_seq = 0


def unique_name() -> str:
    global _seq
    _seq += 1
    return f"{int(time.time())}.M{_seq}P{os.getpid()}.testhost"


class Maildir:
    """One user's Maildir (the folder holding cur/ new/ tmp/)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def create(self) -> "Maildir":
        for d in ("cur", "new", "tmp"):
            (self.path / d).mkdir(parents=True, exist_ok=True)
        return self

    def deliver(self, data: bytes, name: str | None = None) -> str:
        """Delivers like an MTA: write into tmp/, then rename into new/."""
        self.create()
        name = name or unique_name()
        tmp = self.path / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path / "new" / name)
        return name

    def deliver_link(self, src: Path, name: str | None = None) -> str:
        """Delivers an existing (big) file by hard-linking it through tmp/."""
        self.create()
        name = name or unique_name()
        tmp = self.path / "tmp" / name
        os.link(src, tmp)
        os.rename(tmp, self.path / "new" / name)
        return name

    def message_files(self) -> list[Path]:
        out = []
        for d in ("new", "cur"):
            p = self.path / d
            if p.is_dir():
                out.extend(sorted(x for x in p.iterdir() if x.is_file()))
        return out

    def contents_hashes(self) -> list[str]:
        """SHA-256 of the canonical CRLF form of every message file on disk."""
        return sorted(digest_file(p).crlf_sha for p in self.message_files())


_openssl_cache: dict[tuple[str, str], str] = {}


def openssl_passwd(password: str, variant: str = "-6") -> str:
    """`openssl passwd -6` (SHA512-CRYPT) or `-5` (SHA256-CRYPT), password on stdin."""
    key = (variant, password)
    if key not in _openssl_cache:
        r = subprocess.run(
            ["openssl", "passwd", variant, "-stdin"],
            input=password.encode() + b"\n",
            capture_output=True,
            check=True,
            timeout=30,
        )
        h = r.stdout.decode().strip()
        assert h.startswith("$6$" if variant == "-6" else "$5$"), f"unexpected openssl output {h!r}"
        _openssl_cache[key] = h
    return _openssl_cache[key]


def bcrypt_hash(password: str) -> str:
    """A $2y$ bcrypt hash made by the system's libcrypt (libxcrypt)."""
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2y$", 5, None, 0)
    assert salt, "libcrypt cannot make a $2y$ salt"
    h = lib.crypt(password.encode(), salt)
    assert h and h.startswith(b"$2y$"), f"libcrypt bcrypt failed: {h!r}"
    return h.decode()


def scheme_hash(scheme: str, password: str) -> str:
    if scheme == "PLAIN":
        return "{PLAIN}" + password
    if scheme == "SHA512-CRYPT":
        return "{SHA512-CRYPT}" + openssl_passwd(password, "-6")
    if scheme == "SHA256-CRYPT":
        return "{SHA256-CRYPT}" + openssl_passwd(password, "-5")
    if scheme == "BLF-CRYPT":
        return "{BLF-CRYPT}" + bcrypt_hash(password)
    raise ValueError(scheme)


class PasswdFile:
    """A Dovecot-format passwd-file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, str] = {}
        self.extra: dict[str, str] = {}
        self.header = "# Postie interop test users\n\n"

    def add(self, user: str, password: str, scheme: str = "SHA512-CRYPT", extra: str = "") -> "PasswdFile":
        self.entries[user] = scheme_hash(scheme, password)
        self.extra[user] = extra
        return self

    def remove(self, user: str) -> "PasswdFile":
        self.entries.pop(user, None)
        self.extra.pop(user, None)
        return self

    def render(self) -> str:
        out = [self.header]
        for u, h in self.entries.items():
            out.append(f"{u}:{h}{self.extra.get(u, '')}\n")
        return "".join(out)

    def write(self, atomic: bool = True) -> None:
        """Writes the file: atomic replace (rename) or in-place rewrite."""
        text = self.render().encode()
        if atomic:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_bytes(text)
            os.rename(tmp, self.path)
        else:
            with open(self.path, "r+b" if self.path.exists() else "wb") as f:
                f.seek(0)
                f.write(text)
                f.truncate()


# --------------------------------------------------------------------------
# Ports and the server process
# --------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listen_spec(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerError(AssertionError):
    pass


class ServedBy:
    """`host` and `port` of the `server` a test environment runs."""

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port


class PostieServer:
    """`postie serve` as a subprocess with stderr to a log file."""

    def __init__(self, binary: Path, args: list[str], log_path: Path, listens: list[tuple[str, int]],
                 cwd: Path, env: dict | None = None, name: str = "postie"):
        self.binary = binary
        self.args = args
        self.log_path = log_path
        self.listens = listens
        self.cwd = cwd
        self.env = env
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.stdout_path = log_path.with_suffix(".stdout")
        self.notes: list[str] = []

    @property
    def host(self) -> str:
        return self.listens[0][0]

    @property
    def port(self) -> int:
        return self.listens[0][1]

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def start(self, ready_timeout: float = 30.0) -> "PostieServer":
        self.log_f = open(self.log_path, "ab")
        self.out_f = open(self.stdout_path, "ab")
        self.log_f.write(f"=== {self.name}: {' '.join(map(str, [self.binary] + self.args))}\n".encode())
        self.log_f.flush()
        self.proc = subprocess.Popen(
            [str(self.binary)] + self.args,
            stdin=subprocess.DEVNULL,
            stdout=self.out_f,
            stderr=self.log_f,
            cwd=self.cwd,
            env=self.env,
        )
        self.started_at = time.monotonic()
        for host, port in self.listens:
            self.wait_ready(host, port, ready_timeout)
        return self

    def wait_ready(self, host: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with status {self.proc.returncode} before listening on "
                    f"{host}:{port}; log tail:\n{self.log_tail()}")
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError as e:
                last = e
                time.sleep(0.05)
        raise ServerError(f"{self.name} did not accept connections on {host}:{port} within {timeout}s "
                          f"(last error {last}); log tail:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.notes.append(f"{self.name} ignored SIGTERM for {timeout}s; sent SIGKILL")
                self.proc.kill()
                self.proc.wait(10)
        self._close_files()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL now (fault injection) and reap."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait(10)
        self._close_files()

    def _close_files(self) -> None:
        for f in (getattr(self, "log_f", None), getattr(self, "out_f", None)):
            if f and not f.closed:
                f.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])


# --------------------------------------------------------------------------
# Raw POP3 client
# --------------------------------------------------------------------------


class ProtocolError(AssertionError):
    pass


class POP3Raw:
    """A minimal POP3 client over a plain socket that checks framing strictly."""

    def __init__(self, host: str, port: int, timeout: float = 15.0, read_greeting: bool = True,
                 source: str | None = None):
        """`source`: a loopback source address such as 127.0.0.7, so that per-IP login
        throttling in one test does not leak into the next connection."""
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")
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

    def readline_raw(self, limit: int = 1 << 20) -> bytes:
        """One line including its terminator; b'' at EOF."""
        return self.f.readline(limit)

    def readline(self) -> bytes:
        """One line without CRLF; raises EOFError at EOF and ProtocolError for a bare LF."""
        line = self.f.readline(1 << 20)
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
            line = self.f.readline(1 << 20)
            if not line:
                raise EOFError("EOF inside a multi-line response")
            out.append(line)
            if line == b".\r\n":
                return b"".join(out)

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
        r = self.cmd("QUIT")
        return r

    def expect_closed(self, timeout: float = 5.0) -> bytes:
        """Waits for EOF; returns whatever came before it. Raises if the socket stays open."""
        self.sock.settimeout(timeout)
        data = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = self.f.read1(65536) if hasattr(self.f, "read1") else self.sock.recv(65536)
                if not chunk:
                    return data
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            return data
        except socket.timeout:
            pass
        raise ProtocolError(f"connection still open after {timeout}s (received {data[:200]!r})")

    def close(self) -> None:
        try:
            self.f.close()
        finally:
            self.sock.close()

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
