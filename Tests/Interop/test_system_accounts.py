"""System accounts: `--passdb pam` with `--userdb passwd`, serving `~/Maildir` and /var/mail-style
mbox spools of real users made with useradd and chpasswd, the server running `--run-as` an
unprivileged user while PAM runs in root auth workers (docs/users.md, docs/mbox.md).

- A useradd user logs in through PAM (the default `postie` service, which PAM answers from
  /etc/pam.d/other, and Dovecot's own `pam:dovecot`) and reads ~/Maildir; a wrong password and
  an unknown user are refused alike; the server runs as nobody, the workers as root, and they
  exit with the server.
- With `--mbox SPOOL/%u` (a spool directory root:mail 2775 and USER:mail 0660 spools, as on
  Debian), poplib, curl and fetchmail download every message byte-exact, `>From` lines, a
  message without a final newline and a 50 MB one included, with LIST sizes equal to what RETR
  sends; DELE and QUIT keep the spool's owner, group and mode.
- Auth workers that are gone make a login `-ERR [SYS/TEMP]`, never "wrong password".
"""

from __future__ import annotations

import grp
import hashlib
import os
import poplib
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from kits.launcher import HOST
from kits.mail import canonical_crlf
from kits.mbox import DATE, LAST, corpus_messages, postfix_entry, stored
from kits.pop3 import POP3Raw
from kits.tools import Fetchmail, curl, run_postie

RUN_AS = "nobody:mail"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests make system users with useradd and need root (scripts/test runs as root)", pytrace=False)


class SystemUser:
    """A real account: useradd with a home under a world-traversable temporary directory,
    a password set with chpasswd. Removed with userdel at the end."""

    def __init__(self, base: Path):
        self.name = "pt" + secrets.token_hex(4)
        self.password = "Sys-" + secrets.token_urlsafe(12)
        self.home = base / self.name
        for tool in ("useradd", "chpasswd", "userdel"):
            assert shutil.which(tool), f"{tool} is missing (Debian's passwd package)"
        r = subprocess.run(["useradd", "-m", "-d", str(self.home), "-s", "/usr/sbin/nologin", self.name], capture_output=True, text=True)
        assert r.returncode == 0, f"useradd: {r.stderr}"
        r = subprocess.run(["chpasswd"], input=f"{self.name}:{self.password}\n", capture_output=True, text=True)
        assert r.returncode == 0, f"chpasswd: {r.stderr}"
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        os.chmod(self.home, 0o755)

    def remove(self) -> None:
        subprocess.run(["userdel", "-r", self.name], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def accounts():
    require_root()
    base = Path(tempfile.mkdtemp(prefix="postie-homes-"))
    os.chmod(base, 0o755)
    made: list[SystemUser] = []

    def make() -> SystemUser:
        user = SystemUser(base)
        made.append(user)
        return user

    yield make
    for user in made:
        user.remove()
    shutil.rmtree(base, ignore_errors=True)


def mail_gid() -> int:
    return grp.getgrnam("mail").gr_gid


def user_maildir(user: SystemUser, messages: list[bytes]) -> Path:
    """~/Maildir as the user's own, shared with the mail group (setgid, group rw): what the
    unprivileged server needs to read and delete (docs/users.md, system accounts)."""
    md = user.home / "Maildir"
    for d in (md, md / "cur", md / "new", md / "tmp"):
        d.mkdir(exist_ok=True)
        os.chown(d, user.uid, mail_gid())
        os.chmod(d, 0o2770)
    for i, m in enumerate(messages):
        f = md / "new" / f"{1700000000 + i}.M{i}P1.host"
        f.write_bytes(m)
        os.chown(f, user.uid, mail_gid())
        os.chmod(f, 0o660)
    return md


def server_processes(server) -> tuple[int, list[tuple[int, int]]]:
    """The server's uid once it dropped root, and its auth workers as (pid, uid)."""
    server.wait_log(r"master: Info: Running as ")
    server_pid = server.pid
    def uid_of(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
        raise AssertionError(f"no Uid in /proc/{pid}/status")

    workers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"auth-worker" in cmdline:
            workers.append((int(entry.name), uid_of(int(entry.name))))
    return uid_of(server_pid), workers


def login(port: int, user: str, password: str) -> poplib.POP3:
    p = poplib.POP3(HOST, port, timeout=60)
    p.user(user)
    p.pass_(password)
    return p


def assert_refused(port: int, user: str, password: str) -> str:
    c = POP3Raw(HOST, port, timeout=30)
    c.ok("USER " + user)
    reply = c.cmd("PASS " + password)
    c.close()
    assert reply.startswith("-ERR [AUTH]"), f"{user}: expected -ERR [AUTH], got {reply!r}"
    return reply


def test_pam_user_reads_home_maildir_with_the_server_unprivileged(postie, accounts):
    user = accounts()
    messages = [b"From: a@example.org\nSubject: one\n\nfirst\n", b"From: b@example.org\nSubject: two\n\n.dot line\nsecond\n"]
    user_maildir(user, messages)
    server = postie.start(passwd=None, maildir="~/Maildir",
                          extra=["--passdb", "pam", "--userdb", "passwd", "--run-as", RUN_AS, "--trusted-network", "127.0.0.0/8"])
    uid, workers = server_processes(server)
    assert uid == pwd.getpwnam("nobody").pw_uid, f"the server runs as uid {uid}, not nobody"
    # Four for PAM and one for mbox spool ownership.
    assert len(workers) == 5 and all(w_uid == 0 for _, w_uid in workers), f"auth workers: {workers}"

    p = login(server.port, user.name, user.password)
    _, listing, _ = p.list()
    sizes = [int(l.split()[1]) for l in listing]
    bodies = [b"".join(l + b"\r\n" for l in p.retr(n)[1]) for n in (1, 2)]
    p.quit()
    assert bodies == [canonical_crlf(m) for m in messages]
    assert sizes == [len(b) for b in bodies]
    r = curl([f"pop3://{HOST}:{server.port}/2", "-u", f"{user.name}:{user.password}"])
    assert r.returncode == 0 and r.stdout == canonical_crlf(messages[1]), r.stderr.decode()

    assert_refused(server.port, user.name, user.password + "x")
    assert_refused(server.port, "pt-no-such-user", user.password)
    assert user.password not in server.log_text(), "a password reached the log"
    server.wait_log(rf"Login: user=<{user.name}>", count=2)

    pids = [pid for pid, _ in workers]
    server.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and
                                              b"auth-worker" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids):
        time.sleep(0.1)
    left = [pid for pid in pids if Path(f"/proc/{pid}").exists() and b"auth-worker" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert not left, f"auth workers outlived the server: {left}"


def test_user_list_and_config_check_with_pam(postie_bin, accounts):
    user = accounts()
    r = run_postie(postie_bin, ["user", "list", "--passdb", "pam"])
    assert r.returncode == 0, r.stderr.decode()
    names = [line.split("\t")[0] for line in r.stdout.decode().splitlines()]
    assert user.name in names, f"postie user list --passdb pam: {names}"
    assert "nobody" not in names and "root" not in names, "system accounts listed as people"
    r = run_postie(postie_bin, ["config", "check", "--listen", "127.0.0.1:1", "--passdb", "pam:dovecot", "--userdb", "passwd",
                                "--maildir", "~/Maildir"])
    assert r.returncode == 0, f"config check: {r.stdout.decode()} {r.stderr.decode()}"
    assert 'passdb: ["pam:dovecot"]' in r.stdout.decode()


def test_deliver_to_a_system_users_home_maildir_and_spool(postie_bin, accounts, tmp_path):
    """`postie deliver --passdb pam --userdb passwd`, as an MTA's mailbox_command would run it:
    the account's ~/Maildir, or its spool; an unknown user is EX_NOUSER (67)."""
    user = accounts()
    md = user_maildir(user, [])
    message = "From: mta@example.org\nSubject: delivered\n\nhello\n"
    r = run_postie(postie_bin, ["deliver", "--user", user.name, "--maildir", "~/Maildir", "--passdb", "pam", "--userdb", "passwd"], stdin=message)
    assert r.returncode == 0, r.stderr.decode()
    assert [p.read_bytes() for p in (md / "new").iterdir()] == [canonical_crlf(message.encode())]
    spools = spool_dir(tmp_path)
    r = run_postie(postie_bin, ["deliver", "--user", user.name, "--to", f"mbox:{spools}/%u", "--passdb", "pam"], stdin=message)
    assert r.returncode == 0, r.stderr.decode()
    assert (spools / user.name).read_bytes().endswith(b"Subject: delivered\n\nhello\n\n")
    r = run_postie(postie_bin, ["deliver", "--user", "pt-nobody-here", "--maildir", "~/Maildir", "--passdb", "pam", "--userdb", "passwd"],
                   stdin=message)
    assert r.returncode == 67, f"unknown user: exit {r.returncode}: {r.stderr.decode()}"


def test_pam_dovecot_service_and_passdb_alone(postie, accounts):
    """`pam:dovecot` reuses Debian's /etc/pam.d/dovecot (dovecot-core); without --userdb, the
    PAM passdb gives the account's home itself."""
    assert Path("/etc/pam.d/dovecot").exists(), "/etc/pam.d/dovecot is missing (dovecot-core; scripts/test installs it)"
    user = accounts()
    user_maildir(user, [b"Subject: via dovecot's stack\n\nhello\n"])
    server = postie.start(passwd=None, maildir="~/Maildir", extra=["--passdb", "pam:dovecot", "--run-as", RUN_AS, "--trusted-network", "127.0.0.0/8"])
    p = login(server.port, user.name, user.password)
    assert p.stat()[0] == 1
    p.quit()
    assert_refused(server.port, user.name, "wrong")


def test_auth_workers_gone_is_a_temporary_failure(postie, accounts):
    user = accounts()
    user_maildir(user, [])
    server = postie.start(passwd=None, maildir="~/Maildir",
                          extra=["--passdb", "pam", "--userdb", "passwd", "--run-as", RUN_AS, "--trusted-network", "127.0.0.0/8"])
    _, workers = server_processes(server)
    assert workers, "no auth workers"
    for pid, _ in workers:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    c = POP3Raw(HOST, server.port, timeout=30)
    c.ok("USER " + user.name)
    reply = c.cmd("PASS " + user.password)
    assert reply.startswith("-ERR [SYS/TEMP]"), f"with no auth worker left: {reply!r}"
    c.close()
    server.wait_log(r"pam\(postie\).*auth worker")
    assert server.alive()


def spool_dir(base: Path) -> Path:
    """A /var/mail: root:mail 2775."""
    d = base / "mail"
    d.mkdir()
    os.chown(d, 0, mail_gid())
    os.chmod(d, 0o2775)
    return d


def test_system_user_mbox_spool_byte_exact_with_poplib_curl_and_fetchmail(postie, accounts, tmp_path):
    user = accounts()
    spools = spool_dir(user.home.parent)
    fifty = b"Subject: fifty megabytes\nMessage-ID: <big50@example.org>\n\n" + b"".join(
        b"%08d From the middle of a big message, padded out to about seventy characters\n" % i for i in range(640_000))
    assert len(fifty) > 50_000_000
    messages = corpus_messages() + [fifty]
    spool = spools / user.name
    spool.write_bytes(b"".join(postfix_entry(m) for m in messages) + f"From bob {DATE}\n".encode() + LAST)
    os.chown(spool, user.uid, mail_gid())
    os.chmod(spool, 0o660)
    expected = [canonical_crlf(stored(m)) for m in messages] + [canonical_crlf(LAST)]
    digests = [hashlib.sha256(e).hexdigest() for e in expected]

    server = postie.start(passwd=None, maildir=None, extra=["--passdb", "pam", "--userdb", "passwd", "--mbox", str(spools / "%u"),
                                                           "--run-as", RUN_AS, "--trusted-network", "127.0.0.0/8"])
    p = login(server.port, user.name, user.password)
    _, listing, _ = p.list()
    sizes = [int(l.split()[1]) for l in listing]
    assert len(sizes) == len(expected)
    for n in range(1, len(expected) + 1):
        body = b"".join(l + b"\r\n" for l in p.retr(n)[1])
        assert hashlib.sha256(body).hexdigest() == digests[n - 1], f"poplib RETR {n} differs"
        assert sizes[n - 1] == len(body), f"LIST {n} says {sizes[n - 1]}, RETR sent {len(body)}"
    p.quit()

    for n in range(1, len(expected) + 1):
        r = curl([f"pop3://{HOST}:{server.port}/{n}", "-u", f"{user.name}:{user.password}"], timeout=300)
        assert r.returncode == 0, f"curl RETR {n}: {r.stderr.decode()}"
        assert hashlib.sha256(r.stdout).hexdigest() == digests[n - 1], f"curl RETR {n} differs"

    # fetchmail hands each message to its MDA in LF form, after a Received line of its own.
    fm = Fetchmail(tmp_path / "fetchmail", server.port, user.name, user.password, timeout=300)
    r = fm.run(timeout=600)
    assert r.returncode == 0, f"fetchmail: {fm.describe(r)}"
    files = fm.take()
    assert len(files) == len(expected), f"fetchmail delivered {len(files)} of {len(expected)}: {fm.describe(r)}"
    for n, (f, want) in enumerate(zip(files, expected), 1):
        got = f.read_bytes()
        lf = want.replace(b"\r\n", b"\n")
        assert got.endswith(lf) or got.endswith(lf + b"\n"), f"fetchmail message {n} differs: {got[-200:]!r}"

    # DELE of the big one and QUIT: the spool keeps its owner, group and mode, and the rest.
    c = POP3Raw(HOST, server.port, timeout=60)
    c.ok("USER " + user.name)
    c.ok("PASS " + user.password)
    c.ok(f"DELE {len(messages)}")
    c.ok("QUIT")
    st = os.stat(spool)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (user.uid, mail_gid(), 0o660), "the spool lost its owner or mode"
    p = login(server.port, user.name, user.password)
    assert p.stat()[0] == len(expected) - 1
    last = b"".join(l + b"\r\n" for l in p.retr(len(expected) - 1)[1])
    p.quit()
    assert last == expected[-1]
