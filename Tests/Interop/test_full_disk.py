"""A full disk must not lock users out (issue 22): with the Maildir's file system at 100 %, a
POP3 user logs in, retrieves and deletes, and the deletions free the space.

The file system is a real one, really full: a 2 MiB tmpfs mounted over the Maildirs (the test
runs as root, as scripts/test does; without the right to mount it fails rather than test a
simulation of ENOSPC through an LD_PRELOAD shim). A filler file takes every free block, so the
index (postie-uidlist) cannot be rewritten at login or at QUIT.

What Postie does (README.md, "A full disk"): it serves the messages the index already
lists (a message that would need a new UID stays hidden, since a UIDL that cannot be recorded
might later be given to another message), and at QUIT it unlinks the deleted files first and
rewrites the index after, once the unlinks have made room. The log names the condition.
"""

from __future__ import annotations

import os
import poplib
import subprocess
from pathlib import Path

import pytest

from kits.mail import ALICE, Maildir

SIZE = 48 * 1024


def message(i: int) -> bytes:
    body = (f"line {i} ".encode() * 8 + b"\r\n") * (SIZE // 74)
    return f"Subject: message {i}\r\nMessage-ID: <full-{i}@example.org>\r\n\r\n".encode() + body


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mail"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}): run as root to test a really full disk", pytrace=False)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(directory: Path) -> Path:
    """Writes a file until the file system refuses a single byte more."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as error:
                assert error.errno == 28, error  # ENOSPC
    return filler


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def login(e) -> poplib.POP3:
    c = poplib.POP3(e.host, e.port, timeout=30)
    c.user(ALICE[0])
    c.pass_(ALICE[1])
    return c


def uidls(c: poplib.POP3) -> dict[int, str]:
    return {int(n): u for n, u in (line.decode().split() for line in c.uidl()[1])}


def test_full_disk_still_retrieves_and_deletes(env_factory, small_fs):
    e = env_factory()
    md = Maildir(Path(e.template.replace("%u", ALICE[0])))
    for i in range(1, 6):
        md.deliver(message(i))
    c = login(e)  # the five get their UIDs, recorded in the index
    before = uidls(c)
    assert len(before) == 5
    c.quit()
    md.deliver(message(6))  # new mail the index does not list yet
    filler = fill(small_fs)
    assert free_bytes(small_fs) == 0

    c = login(e)
    count, _ = c.stat()
    # The five the index lists; the sixth would need a UID that cannot be recorded.
    assert count == 5
    assert uidls(c) == before
    lines = c.retr(1)[1]
    assert b"\r\n".join(lines) + b"\r\n" == message(1)
    for n in (1, 2, 3):
        c.dele(n)
    assert c.quit().startswith(b"+OK")
    opened = e.server.wait_log(r"file system full: cannot rewrite postie-uidlist", timeout=10)
    assert "No space left on device" in opened[0] and "serving the 5 messages" in opened[0], opened
    assert "1 newer ones hidden" in opened[0], opened
    e.server.wait_log(r"file system full: UPDATE deleted the messages first", timeout=10)
    assert free_bytes(small_fs) >= 3 * len(message(1))
    names = [p.name for p in md.message_files()]
    assert len(names) == 3, names

    # With room again, the next login sees the two kept with their UIDLs and the new one.
    filler.unlink()
    c = login(e)
    after = uidls(c)
    assert len(after) == 3
    assert list(after.values())[:2] == [before[4], before[5]]
    assert after[3] not in before.values()
    assert b"\r\n".join(c.retr(3)[1]) + b"\r\n" == message(6)
    c.quit()


def test_full_disk_deleting_one_tiny_message(env_factory, small_fs):
    """Deleting a tiny message frees less than the index needs: the file still goes, QUIT is
    +OK, and the next login drops the index entry (its UIDL is never given again)."""
    e = env_factory()
    md = Maildir(Path(e.template.replace("%u", ALICE[0])))
    for i in range(1, 40):
        md.deliver(b"Subject: tiny %d\r\n\r\nx\r\n" % i)
    c = login(e)
    before = uidls(c)
    c.quit()
    filler = fill(small_fs)
    c = login(e)
    assert c.stat()[0] == 39
    c.dele(1)
    assert c.quit().startswith(b"+OK")
    assert len(md.message_files()) == 38
    filler.unlink()
    c = login(e)
    after = uidls(c)
    assert list(after.values()) == [before[n] for n in range(2, 40)]
    c.quit()


def test_full_disk_with_retention_deletes_for_good(env_factory, small_fs):
    """With deleted-mail retention on, a full disk has no room for the retention records and
    moving a file frees nothing: the deletions are made for good, and the log says so."""
    e = env_factory(extra=["--deleted-retention", "7d"])
    md = Maildir(Path(e.template.replace("%u", ALICE[0])))
    for i in range(1, 4):
        md.deliver(message(i))
    c = login(e)
    before = uidls(c)
    c.quit()
    filler = fill(small_fs)
    c = login(e)
    c.dele(1)
    c.dele(2)
    assert c.quit().startswith(b"+OK")
    e.server.wait_log(r"file system full: UPDATE deleted the messages for good, not retained,", timeout=10)
    assert len(md.message_files()) == 1
    assert free_bytes(small_fs) >= 2 * len(message(1))
    filler.unlink()
    c = login(e)
    assert list(uidls(c).values()) == [before[3]]
    c.quit()
