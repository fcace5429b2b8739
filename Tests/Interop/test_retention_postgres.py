"""Deleted-mail retention on the PostgreSQL store (issue 18): a QUIT's deletions are kept out of
POP3's sight, listed and given back by `postie mailbox`, purged by the sweep; a consistent
Maildir export imported with `postie db import` keeps every UIDL."""

from __future__ import annotations

import json
import poplib
import random
import time
from pathlib import Path

from kits.launcher import free_port
from kits.mail import canonical_crlf, numbered_message
from kits.metrics import wait_metrics

ALICE = ("alice", "Alice-ret-S3cret")


def pop(server, user=ALICE) -> poplib.POP3:
    p = poplib.POP3(server.host, server.port, timeout=30)
    p.user(user[0])
    p.pass_(user[1])
    return p


def listing(server, user=ALICE) -> dict[str, bytes]:
    """UIDL -> message bytes as RETR gives them (CRLF, unstuffed)."""
    p = pop(server, user)
    try:
        out = {}
        for line in p.uidl()[1]:
            n, uidl = line.decode().split()
            out[uidl] = b"\r\n".join(p.retr(int(n))[1]) + b"\r\n"
        return out
    finally:
        p.quit()


def deleted(pgdb) -> list[dict]:
    return json.loads(pgdb.postie("mailbox", "deleted", ALICE[0], "--store", "postgres", "--json").stdout)


def setup(pgdb, tmp: Path, count: int) -> list[bytes]:
    pgdb.add_user(*ALICE)
    rng = random.Random(18)
    messages = []
    for i in range(count):
        data = numbered_message(i, rng)
        (tmp / f"m{i}.eml").write_bytes(data)
        pgdb.import_message(tmp / f"m{i}.eml", ALICE[0])
        messages.append(canonical_crlf(data))
    return messages


def test_deleted_mail_is_kept_listed_and_given_back(pgdb, postie, tmp_path):
    messages = setup(pgdb, tmp_path, 12)
    server = pgdb.serve(postie, "--deleted-retention", "7d")
    before = listing(server)
    assert sorted(before.values()) == sorted(messages)
    uidls = list(before)

    p = pop(server)
    for n in (1, 3, 5, 7):
        p.dele(n)
    p.quit()
    gone = [uidls[i] for i in (0, 2, 4, 6)]
    assert set(listing(server)) == set(uidls) - set(gone), "a QUIT's deletions must leave POP3 at once"
    assert int(pgdb.psql("SELECT count(*) FROM messages WHERE deleted_at IS NOT NULL")) == 4

    kept = deleted(pgdb)
    assert [m["uidl"] for m in kept] == gone
    assert all(m["address"] == "127.0.0.1" and m["size"] == len(before[m["uidl"]]) for m in kept)
    assert all(m["deleted_at"].endswith("Z") for m in kept)

    # One by UIDL, then the rest; each comes back with its UIDL and its bytes.
    r = pgdb.postie("mailbox", "undelete", ALICE[0], "--store", "postgres", "--uidl", gone[1])
    assert f"restored {gone[1]}" in r.stdout
    r = pgdb.postie("mailbox", "undelete", ALICE[0], "--store", "postgres", "--uidl", "no-such-uidl", check=False)
    assert r.returncode == 1 and "no-such-uidl" in r.stderr
    pgdb.postie("mailbox", "undelete", ALICE[0], "--store", "postgres", "--since", "1h")
    assert listing(server) == before
    assert deleted(pgdb) == []

    r = pgdb.postie("mailbox", "deleted", "nobody", "--store", "postgres", check=False)
    assert r.returncode == 67, (r.returncode, r.stderr)


def test_retained_mail_is_purged_by_the_sweep(pgdb, postie, tmp_path):
    messages = setup(pgdb, tmp_path, 5)
    metrics_port = free_port()
    server = pgdb.serve(postie, "--deleted-retention", "2s", "--metrics", f"127.0.0.1:{metrics_port}")
    p = pop(server)
    sizes = [int(line.split()[1]) for line in p.list()[1]]
    for n in (1, 2, 3):
        p.dele(n)
    p.quit()
    deadline = time.monotonic() + 15
    while deleted(pgdb) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert deleted(pgdb) == [], "retained mail outlived its 2 s retention by more than 15 s"
    assert int(pgdb.psql("SELECT count(*) FROM messages")) == 2
    s = wait_metrics(metrics_port, lambda s: s.get("pop3_deleted_purged_messages_total") >= 3, what="purge counted")
    assert s.get("pop3_deleted_purged_messages_total") == 3
    assert s.get("pop3_deleted_purged_bytes_total") == sum(sizes[:3])
    assert s.get("pop3_deleted_retained_messages") == 0
    assert len(listing(server)) == 2 and len(messages) == 5


def test_export_reimported_keeps_every_uidl(pgdb, postie, tmp_path):
    setup(pgdb, tmp_path, 8)
    server = pgdb.serve(postie)
    before = listing(server)
    export = tmp_path / "export"
    r = pgdb.postie("mailbox", "export", ALICE[0], "--store", "postgres", "--to", f"maildir:{export}")
    assert "exported 8 messages" in r.stdout
    # Into a second user of the same database, as a restore would: same UIDLs, same bytes, same order.
    bob = ("bob", "bob-restore-pw")
    pgdb.add_user(*bob)
    files = sorted(str(f) for f in (export / "cur").iterdir())
    pgdb.postie("db", "import", "--user", "bob", *files)
    again = pgdb.postie("db", "import", "--user", "bob", *files)
    assert again.stdout.count("already there") == 8
    restored = listing(server, bob)
    assert list(restored) == list(before)
    assert restored == before
