"""The benchmark's mail: N users with M messages of realistic sizes, a 100,000-message
mailbox and a mailbox holding one 70 MB message.

Everything is generated from a seed, delivered like an MTA would (tmp/ then new/, names
without Dovecot's S=/W= hints, so both servers must size each message themselves), and
cached under the data directory; each server gets its own fresh `cp -a` copy.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

LOREM = ("the quick brown fox jumps over the lazy dog while postie counts octets and dovecot "
         "keeps its index; mail administrators compare servers line by line before they switch ").split()


@dataclass(frozen=True)
class Spec:
    users: int = 50
    messages: int = 20  # per user
    bulk: int = 100_000  # messages in the big mailbox
    huge_mb: int = 70  # the single big message
    seed: int = 1939

    def key(self) -> str:
        return f"u{self.users}-m{self.messages}-b{self.bulk}-h{self.huge_mb}-s{self.seed}"


def user_names(spec: Spec) -> list[str]:
    return [f"user{i:03d}" for i in range(1, spec.users + 1)]


BULK_USER = "bulk"
HUGE_USER = "huge"


def password(user: str) -> str:
    return f"bench-{user}-pw"


def realistic_size(rng: random.Random) -> int:
    """Log-normal around 6 KB with a long tail (attachments), capped at 2 MB."""
    return int(min(2 * 1024 * 1024, max(600, rng.lognormvariate(math.log(6000), 1.1))))


def message(rng: random.Random, n: int, size: int) -> bytes:
    head = (f"Return-Path: <sender{n % 97}@example.net>\n"
            f"Received: from mx.example.net by mail.example.org; Fri, 27 Nov 2026 10:{n % 60:02d}:00 +0000\n"
            f"From: Sender {n % 97} <sender{n % 97}@example.net>\n"
            f"To: someone@example.org\n"
            f"Subject: benchmark message {n}\n"
            f"Message-ID: <{n}.{rng.getrandbits(48):x}@example.net>\n"
            f"Date: Fri, 27 Nov 2026 10:{n % 60:02d}:00 +0000\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n").encode()
    body = bytearray()
    line: list[str] = []
    while len(head) + len(body) < size:
        w = LOREM[rng.randrange(len(LOREM))]
        line.append(w)
        if sum(len(x) + 1 for x in line) > 70:
            text = " ".join(line)
            if rng.random() < 0.02:
                text = "." + text  # lines that need dot-stuffing
            body += text.encode() + b"\n"
            line = []
    return head + bytes(body)


class Deliverer:
    def __init__(self, maildir: Path):
        self.maildir = maildir
        for d in ("cur", "new", "tmp"):
            (maildir / d).mkdir(parents=True, exist_ok=True)
        self.n = 0

    def deliver(self, data: bytes) -> None:
        self.n += 1
        name = f"1764237600.M{self.n:06d}P4242Q{self.n}.bench"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(data)
        os.rename(tmp, self.maildir / "new" / name)


def huge_message(path: Path, megabytes: int, seed: int) -> None:
    rng = random.Random(seed)
    target = megabytes * 1024 * 1024
    with open(path, "wb") as f:
        f.write(b"From: big@example.net\nTo: huge@example.org\nSubject: one 70 MB message\n\n")
        written = 0
        block = bytearray()
        while written < target:
            block.clear()
            for _ in range(4096):
                block += rng.randbytes(57).hex().encode()[:76] + b"\n"
            f.write(block)
            written += len(block)


def build(spec: Spec, data_root: Path) -> Path:
    """Returns the template mail root (one folder per user), generating it once."""
    root = data_root / spec.key()
    done = root / "spec.json"
    if done.exists():
        return root / "mail"
    if root.exists():
        shutil.rmtree(root)
    mail = root / "mail"
    rng = random.Random(spec.seed)
    n = 0
    for u in user_names(spec):
        d = Deliverer(mail / u)
        for _ in range(spec.messages):
            n += 1
            d.deliver(message(rng, n, realistic_size(rng)))
    bulk = Deliverer(mail / BULK_USER)
    for _ in range(spec.bulk):
        n += 1
        bulk.deliver(message(rng, n, rng.randrange(1500, 4500)))
    h = Deliverer(mail / HUGE_USER)
    huge_message(mail / HUGE_USER / "tmp" / "huge", spec.huge_mb, spec.seed)
    os.rename(mail / HUGE_USER / "tmp" / "huge", mail / HUGE_USER / "new" / "1764237600.M000001P4242Q1.bench")
    h.n = 1
    done.write_text(json.dumps(asdict(spec)))
    return mail


def copy(template: Path, dest: Path) -> Path:
    """A fresh copy for one server (cp -a keeps it fast and byte-identical)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(template), str(dest)], check=True)
    return dest


def all_users(spec: Spec) -> list[str]:
    return user_names(spec) + [BULK_USER, HUGE_USER]
