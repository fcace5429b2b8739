"""`postie fetch` as the tests run it: the command with its JSON summary, what arrived locally
(Maildir or mboxrd) and what a message must look like there, and password files.
"""

from __future__ import annotations

import time

import json
import os
import subprocess
from pathlib import Path

from .mail import Maildir

def run_fetch(postie_bin: Path, args: list[str], password: str | None = None, timeout: float = 120,
              env_extra: dict | None = None) -> tuple[int, dict | None, str, str]:
    """Runs `postie fetch ... --json`; returns (exit code, parsed JSON or None, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("POSTIE_PASSWORD", None)
    if password is not None:
        env["POSTIE_PASSWORD"] = password
    env.update(env_extra or {})
    r = subprocess.run([str(postie_bin), "fetch", *args, "--json"], capture_output=True, timeout=timeout, env=env)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    try:
        doc = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        doc = None
    return r.returncode, doc, out, err


def account(doc: dict, i: int = 0) -> dict:
    return doc["accounts"][i]


def local_messages(maildir: Path) -> list[bytes]:
    out = []
    for sub in ("new", "cur"):
        p = maildir / sub
        if p.is_dir():
            out.extend(f.read_bytes() for f in sorted(p.iterdir()))
    return out


def server_messages(md: Maildir) -> list[bytes]:
    """The server's message files. A server process still finishing a dropped session (Dovecot
    moves new/ to cur/ and renames on flag changes) can rename a file between the listing and
    the read: list again until one listing reads whole."""
    for _ in range(50):
        try:
            return [p.read_bytes() for p in md.message_files()]
        except FileNotFoundError:
            time.sleep(0.05)
    return [p.read_bytes() for p in md.message_files()]


def expected_local(original: bytes) -> bytes:
    """What a Maildir delivery agent stores: POP3 adds a line end to a message that had none."""
    return original if original.endswith(b"\n") or original == b"" else original + b"\n"


def parse_mboxrd(data: bytes) -> list[tuple[bytes, bytes]]:
    """(From line, message) pairs of an mboxrd file, quoting undone."""
    msgs: list[tuple[bytes, list[bytes]]] = []
    for line in data.split(b"\n")[:-1]:
        if line.startswith(b"From "):
            msgs.append((line, []))
            continue
        assert msgs, "mbox does not start with a From line"
        if line.lstrip(b">").startswith(b"From ") and line.startswith(b">"):
            line = line[1:]
        msgs[-1][1].append(line)
    out = []
    for frm, lines in msgs:
        assert lines and lines[-1] == b"", "each mbox message ends with a blank line"
        out.append((frm, b"\n".join(lines[:-1]) + b"\n"))
    return out


def write_password(tmp: Path, name: str, password: str) -> Path:
    p = tmp / f"{name}.password"
    p.write_text(password + "\n")
    p.chmod(0o600)
    return p


def msgs(n: int) -> list[bytes]:
    """n small distinct messages (LF line ends)."""
    return [f"Subject: m{i}\n\nbody {i}\n".encode() for i in range(1, n + 1)]
