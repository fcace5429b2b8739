"""Mail on disk for the Postie interop tests: the canonical forms, the message corpus,
Maildir delivery, passwd-file writing and the suite's users.

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
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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
# The suite's users
# --------------------------------------------------------------------------

ALICE = ("alice", "Alice-S3cret!pw")  # SHA512-CRYPT, hashed by `openssl passwd -6`
BOB = ("bob", "bob-plain-pw")  # {PLAIN}


def make_passwd(tmp: Path) -> PasswdFile:
    """tmp/passwd with alice (SHA512-CRYPT) and bob ({PLAIN})."""
    pw = PasswdFile(tmp / "passwd")
    pw.add(*ALICE, scheme="SHA512-CRYPT")
    pw.add(*BOB, scheme="PLAIN", extra=":1000:1000::/home/bob::")
    pw.write()
    return pw
