"""Switching from Dovecot: same UIDLs on the same Maildirs, and `postie migrate`.

Against Debian's Dovecot (dovecot-pop3d) and fetchmail, neither written here:

* Dovecot, then Postie, then Dovecot again serve one Maildir; fetchmail (`--keep --uidl`,
  its own .fetchids) downloads everything once and nothing after each switch.
* Dovecot's other `pop3_uidl_format`s and `pop3_reuse_xuidl` give the same UIDL lists as
  Postie's `--pop3-uidl-format` / `--pop3-reuse-xuidl`.
* `postie migrate pop3` copies a Dovecot mailbox (over implicit TLS and STLS), `postie migrate
  compare` finds no difference, and fetchmail pointed at Postie fetches nothing new.
* A migration killed with SIGKILL at random moments and resumed copies each message once.
"""

from __future__ import annotations

import json
import os
import poplib
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import note
from kits.mail import canonical_crlf, corpus, numbered_message, sha
from kits.pop3 import POP3Raw
from kits.scripted import ScriptedServer, ScriptedSession
from kits.tls import make_pki
from kits.tools import Fetchmail

USER, PASSWORD = "alice", "Al1ce-dove-pw"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def listing(port: int, user: str = USER, password: str = PASSWORD, host: str = "127.0.0.1") -> list[tuple[str, int]]:
    """[(uidl, size)] in message order, read with Python's poplib."""
    p = poplib.POP3(host, port, timeout=30)
    try:
        p.user(user)
        p.pass_(password)
        uidls = {int(n): u.decode() for n, u in (l.split() for l in p.uidl()[1])}
        sizes = {int(n): int(s) for n, s in (l.split() for l in p.list()[1])}
    finally:
        p.quit()
    assert sorted(uidls) == sorted(sizes)
    return [(uidls[n], sizes[n]) for n in sorted(uidls)]


def contents(port: int, user: str = USER, password: str = PASSWORD) -> list[str]:
    """SHA-256 of every message as RETR sends it (CRLF, unstuffed), in order (a raw client:
    poplib refuses the corpus's 5000-character line)."""
    with POP3Raw("127.0.0.1", port, timeout=30) as c:
        c.login(user, password)
        n, _ = c.stat()
        out = [sha(c.retr(i)) for i in range(1, n + 1)]
        c.quit()
    return out


def fill(md, n_numbered: int = 6, seed: int = 7) -> None:
    """The corpus (dots, 8-bit, unterminated last lines...) plus some bulk messages."""
    for data in corpus().values():
        md.deliver(data)
    rng = random.Random(seed)
    for i in range(n_numbered):
        md.deliver(numbered_message(i, rng))


def postie_on(postie, d, extra: list[str] | None = None):
    """Postie on Dovecot's passwd-file and Maildirs."""
    return postie.start(passwd=d.passwd_path, maildir=str(d.mail_root / "%u"), extra=extra or [])


def repoint(fm: Fetchmail, old: int, new: int) -> None:
    """Points fetchmail's poll at another port, keeping its .fetchids."""
    fm.rc.write_text(fm.rc.read_text().replace(f"service {old} ", f"service {new} "))


def fetched(fm: Fetchmail) -> int:
    r = fm.run()
    got = fm.take()
    assert r.returncode in (0, 1), f"fetchmail failed: {fm.describe(r)}"
    assert (r.returncode == 1) == (not got), f"fetchmail exit status and deliveries disagree: {fm.describe(r)}"
    return len(got)


def postie_cmd(postie_bin: Path, args: list[str], *, env_password: str | None = None, timeout: float = 120,
               check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("POSTIE_PASSWORD", None)
    if env_password is not None:
        env["POSTIE_PASSWORD"] = env_password
    r = subprocess.run([str(postie_bin)] + args, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert r.returncode == 0, f"postie {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def assert_dovecot_happy(d) -> None:
    log = d.log_tail(400)
    for bad in ("Corrupted", "corrupted", "Error:", "Panic", "Fatal"):
        assert bad not in log, f"Dovecot complained ({bad}):\n{log}"


# --------------------------------------------------------------------------
# 1. Dovecot -> Postie -> Dovecot on the same Maildir, fetchmail never re-downloads
# --------------------------------------------------------------------------


def test_switch_from_dovecot_and_back_without_a_redownload(dovecot, postie, tmp_path):
    d = dovecot(users={USER: PASSWORD})
    md = d.maildir(USER)
    fill(md)
    d.fix_ownership()
    total = len(corpus()) + 6

    fm = Fetchmail(tmp_path / "fetchmail", d.port, USER, PASSWORD)
    assert fetched(fm) == total, "fetchmail should download everything from Dovecot"
    assert fetched(fm) == 0
    at_dovecot = listing(d.port)
    assert len(at_dovecot) == total
    d.stop()

    s = postie_on(postie, d)
    assert listing(s.port) == at_dovecot, "Postie must send Dovecot's UIDLs and sizes"
    repoint(fm, d.port, s.port)
    assert fetched(fm) == 0, "fetchmail downloaded again after the switch to Postie"

    md.deliver(b"From: late@example.org\nSubject: while Postie served\n\nnew\n")
    assert fetched(fm) == 1, "the message delivered under Postie should be fetched once"
    assert fetched(fm) == 0
    at_postie = listing(s.port)
    assert at_postie[:total] == at_dovecot and len(at_postie) == total + 1
    s.stop()

    d.fix_ownership()
    d.start()
    assert listing(d.port) == at_postie, "Dovecot must take the Maildir back with every UIDL unchanged"
    repoint(fm, s.port, d.port)
    assert fetched(fm) == 0, "fetchmail downloaded again after the switch back to Dovecot"
    md.deliver(b"From: later@example.org\nSubject: back at Dovecot\n\nnewer\n")
    d.fix_ownership()
    assert fetched(fm) == 1
    assert_dovecot_happy(d)
    note(f"switch test: {total} messages, Dovecot -> Postie -> Dovecot, fetchmail re-downloaded none")


def test_switch_with_dovecot_control_directory(dovecot, postie, postie_bin, tmp_path):
    """mail_location = maildir:...:CONTROL=... keeps dovecot-uidlist outside the Maildir; with
    --dovecot-control pointing there Postie serves Dovecot's UIDLs, records new mail (LMTP's
    `postie deliver` and new/) in that file, and Dovecot takes the Maildir back unchanged."""
    d = dovecot(users={USER: PASSWORD}, control=True)
    md = d.maildir(USER)
    fill(md)
    d.fix_ownership()
    total = len(corpus()) + 6
    fm = Fetchmail(tmp_path / "fetchmail", d.port, USER, PASSWORD)
    assert fetched(fm) == total
    at_dovecot = listing(d.port)
    control_list = d.control_root / USER / ".INBOX" / "dovecot-uidlist"  # where Dovecot keeps INBOX's
    assert control_list.exists() and not (md.path / "dovecot-uidlist").exists(), "Dovecot did not use CONTROL="
    d.stop()

    control = ["--dovecot-control", f"{d.control_root}/%u"]
    s = postie_on(postie, d, extra=control)
    assert listing(s.port) == at_dovecot, "Postie must send Dovecot's UIDLs from the control directory"
    repoint(fm, d.port, s.port)
    assert fetched(fm) == 0, "fetchmail downloaded again after the switch to Postie"
    md.deliver(b"From: late@example.org\nSubject: into new/\n\nnew\n")
    r = subprocess.run([str(postie_bin), "deliver", "--user", USER, "--maildir", str(d.mail_root / "%u"),
                        "--passwd-file", str(d.passwd_path), *control],
                       input=b"From: lmtp@example.org\nSubject: delivered\n\nvia postie deliver\n", capture_output=True)
    assert r.returncode == 0, r.stderr
    assert fetched(fm) == 2
    at_postie = listing(s.port)
    assert at_postie[:total] == at_dovecot and len(at_postie) == total + 2
    assert not (md.path / "dovecot-uidlist").exists(), "Postie wrote a dovecot-uidlist into the Maildir"
    s.stop()

    d.fix_ownership()
    d.start()
    assert listing(d.port) == at_postie, "Dovecot must take the Maildir back with every UIDL unchanged"
    repoint(fm, s.port, d.port)
    assert fetched(fm) == 0
    assert_dovecot_happy(d)

    # migrate pop3 into a fresh Maildir whose dovecot-uidlist lives in a control directory:
    # Postie serving it with the same setting sends the source's UIDLs.
    target, target_control = tmp_path / "migrated", tmp_path / "migrated-control"
    postie_cmd(postie_bin, ["migrate", "pop3", "--server", f"127.0.0.1:{d.port}", "--tls", "none", "--user", USER,
                            "--to-maildir", str(target / "%u"), "--dovecot-control", str(target_control / "%u")],
               env_password=PASSWORD)
    assert (target_control / USER / ".INBOX" / "dovecot-uidlist").exists()
    assert not (target / USER / "dovecot-uidlist").exists()
    s2 = postie.start(passwd=d.passwd_path, maildir=str(target / "%u"),
                      extra=["--dovecot-control", str(target_control / "%u")])
    assert listing(s2.port) == at_postie, "the migrated Maildir must serve the source's UIDLs"


# --------------------------------------------------------------------------
# Other pop3_uidl_formats and pop3_reuse_xuidl against Dovecot configured the same way
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["%v.%u", "%f", "%g", "%08XUu-%v", "%3.6f%Mu"])
def test_uidl_formats_match_dovecot(dovecot, postie, fmt):
    d = dovecot(users={USER: PASSWORD}, uidl_format=fmt)
    md = d.maildir(USER)
    fill(md, n_numbered=3)
    d.fix_ownership()
    at_dovecot = listing(d.port)
    d.stop()

    s = postie_on(postie, d, ["--pop3-uidl-format", fmt])
    assert listing(s.port) == at_dovecot
    md.deliver(b"Subject: new under Postie\n\nx\n")
    at_postie = listing(s.port)
    s.stop()

    d.fix_ownership()
    d.start()
    assert listing(d.port) == at_postie
    assert_dovecot_happy(d)


def test_header_md5_format_is_refused_like_dovecot_maildir(dovecot, postie_bin, tmp_path):
    """Dovecot has %m (header MD5) for mbox only: on a Maildir its UIDL fails. Postie refuses
    the setting up front instead of failing each session."""
    d = dovecot(users={USER: PASSWORD}, uidl_format="%m")
    fill(d.maildir(USER), n_numbered=1)
    d.fix_ownership()
    p = poplib.POP3(d.host, d.port, timeout=30)
    p.user(USER)
    p.pass_(PASSWORD)
    with pytest.raises((poplib.error_proto, EOFError, ConnectionError)):
        p.uidl()
    p.close()

    r = postie_cmd(postie_bin, ["config", "check", "--listen", "127.0.0.1:1", "--passwd-file", str(d.passwd_path),
                                "--maildir", str(d.mail_root / "%u"), "--pop3-uidl-format", "%m"], check=False)
    assert r.returncode != 0
    assert "pop3_uidl_format" in r.stdout + r.stderr and "mbox" in r.stdout + r.stderr


def test_reuse_xuidl_matches_dovecot(dovecot, postie):
    d = dovecot(users={USER: PASSWORD}, extra_conf="pop3_reuse_xuidl = yes\n")
    md = d.maildir(USER)
    md.deliver(b"From: a\nX-UIDL: 8c1e2f0a9b4d-old-server\nSubject: imported\n\nx\n")
    md.deliver(b"From: a\nSubject: no header\n\ny\n")
    md.deliver(b"From: a\nx-uidl:   LowerCaseName  \nSubject: imported 2\n\nz\n")
    d.fix_ownership()
    at_dovecot = listing(d.port)
    assert at_dovecot[0][0] == "8c1e2f0a9b4d-old-server"
    d.stop()
    s = postie_on(postie, d, ["--pop3-reuse-xuidl"])
    assert listing(s.port) == at_dovecot


# --------------------------------------------------------------------------
# 2. postie migrate pop3 from Dovecot, then postie migrate compare
# --------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_migrate_from_dovecot_then_compare_and_fetchmail(dovecot, postie, postie_bin, tmp_path, tls):
    pki = make_pki(tmp_path / "pki")
    d = dovecot(users={USER: PASSWORD}, cert=pki.a.cert, key=pki.a.key)
    md = d.maildir(USER)
    fill(md, n_numbered=10)
    md.deliver(b"From: a\nX-UIDL: carried-over-from-an-older-server\n\nx\n")
    d.fix_ownership()
    source = listing(d.port)
    fm = Fetchmail(tmp_path / "fetchmail", d.port, USER, PASSWORD)
    assert fetched(fm) == len(source)

    pwfile = tmp_path / "alice.pw"
    pwfile.write_text(PASSWORD + "\n")
    os.chmod(pwfile, 0o600)
    target = tmp_path / "postie-mail"
    server = f"127.0.0.1:{d.tls_port if tls == 'implicit' else d.port}"
    r = postie_cmd(postie_bin, ["migrate", "pop3", "--server", server, "--tls", tls, "--ca-file", str(pki.cafile),
                                "--user", USER, "--password-file", str(pwfile), "--to-maildir", str(target / USER)])
    assert f"{len(source)} copied" in r.stdout, r.stdout + r.stderr
    assert PASSWORD not in r.stdout + r.stderr

    s = postie.start(passwd=d.passwd_path, maildir=str(target / "%u"))
    assert listing(s.port) == source
    assert contents(s.port) == contents(d.port), "messages must arrive byte-exact"

    # The check an admin runs before switching DNS: a = Dovecot over 995, b = Postie.
    args = ["migrate", "compare", "--a", f"127.0.0.1:{d.tls_port}", "--a-tls", "implicit", "--a-ca-file", str(pki.cafile),
            "--b", f"127.0.0.1:{s.port}", "--b-tls", "none", "--user", USER]
    r = postie_cmd(postie_bin, args, env_password=PASSWORD)
    assert "same" in r.stdout
    r = postie_cmd(postie_bin, args + ["--json"], env_password=PASSWORD)
    report = json.loads(r.stdout)
    assert report["same"] is True and report["users"][0]["a_count"] == len(source)

    repoint(fm, d.port, s.port)
    assert fetched(fm) == 0, "fetchmail fetched again from the migrated mailbox"

    # A difference is reported, and a second run copies just what is new.
    md.deliver(b"From: b\nSubject: arrived after the migration\n\nq\n")
    d.fix_ownership()
    r = postie_cmd(postie_bin, args + ["--json"], env_password=PASSWORD, check=False)
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["same"] is False and len(report["users"][0]["only_a"]) == 1
    r = postie_cmd(postie_bin, ["migrate", "pop3", "--server", server, "--tls", tls, "--ca-file", str(pki.cafile),
                                "--user", USER, "--password-file", str(pwfile), "--to-maildir", str(target / USER),
                                "--delete-source"])
    assert "1 copied" in r.stdout and f"{len(source)} already there" in r.stdout, r.stdout
    assert listing(d.port) == [], "--delete-source should empty the source"
    assert len(listing(s.port)) == len(source) + 1
    assert fetched(fm) == 1


def test_compare_reports_errors_and_needs_no_password_on_the_command_line(dovecot, postie_bin, tmp_path):
    d = dovecot(users={USER: PASSWORD, "bob": "b0b-pw"})
    fill(d.maildir(USER), n_numbered=1)
    d.fix_ownership()
    users = tmp_path / "users"
    users.write_text(f"# user:password\n{USER}:{PASSWORD}\nbob:wrong-password\n")
    r = postie_cmd(postie_bin, ["migrate", "compare", "--a", f"127.0.0.1:{d.port}", "--a-tls", "none",
                                "--b", f"127.0.0.1:{d.port}", "--b-tls", "none", "--users-file", str(users)],
                   check=False)
    assert r.returncode == 1
    assert f"{USER}: same" in r.stdout and "bob: ERROR" in r.stdout
    assert "wrong-password" not in r.stdout + r.stderr
    # Without a password source it refuses, and it never offers a --password flag.
    r = postie_cmd(postie_bin, ["migrate", "compare", "--a", f"127.0.0.1:{d.port}", "--b", f"127.0.0.1:{d.port}",
                                "--user", USER], check=False)
    assert r.returncode != 0 and "POSTIE_PASSWORD" in r.stderr
    r = postie_cmd(postie_bin, ["migrate", "pop3", "--server", f"127.0.0.1:{d.port}", "--user", USER,
                                "--password", PASSWORD, "--to-maildir", str(tmp_path / "x")], check=False)
    assert r.returncode != 0
    # STLS is the default away from port 995; this Dovecot has no TLS, so it is refused.
    r = postie_cmd(postie_bin, ["migrate", "pop3", "--server", f"127.0.0.1:{d.port}", "--user", USER,
                                "--to-maildir", str(tmp_path / "x")], env_password=PASSWORD, check=False)
    assert r.returncode != 0 and "STLS" in r.stderr


# --------------------------------------------------------------------------
# 3. SIGKILL during a migration, resumed: each message exactly once
# --------------------------------------------------------------------------


def test_interrupted_migration_copies_each_message_exactly_once(dovecot, postie, postie_bin, tmp_path):
    d = dovecot(users={USER: PASSWORD})
    md = d.maildir(USER)
    rng = random.Random(1939)
    for i in range(120):
        md.deliver(numbered_message(i, rng, size=rng.choice([300, 2000, 40_000, 250_000])))
    d.fix_ownership()
    source = listing(d.port)
    target = tmp_path / "postie-mail"
    cmd = [str(postie_bin), "migrate", "pop3", "--server", f"127.0.0.1:{d.port}", "--tls", "none",
           "--user", USER, "--to-maildir", str(target / USER)]
    env = dict(os.environ, POSTIE_PASSWORD=PASSWORD)

    def stored() -> int:
        """Messages downloaded completely (tmp/NAME) or moved in (cur/)."""
        n = 0
        for sub in ("tmp", "cur"):
            p = target / USER / sub
            if p.is_dir():
                n += sum(1 for f in p.iterdir() if not f.name.endswith(".part"))
        return n

    # Kill at random points of progress (not after fixed delays, so that a fast machine is
    # interrupted as often as a slow one), with a random extra delay of up to 20 ms.
    kills = 0
    completed_early = False
    progress = []
    threshold = 0
    while threshold < len(source) - 1 and kills < 15:
        threshold = min(threshold + rng.randint(1, 20), len(source) - 1)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and stored() < threshold and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        cur = target / USER / "cur"
        progress.append(len(list(cur.iterdir())) if cur.is_dir() else 0)
        if proc.returncode == 0:
            completed_early = True
            break
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    note(f"interrupted migration: {kills} SIGKILLs (messages in cur/ after each: {progress}), then: {r.stdout.strip()}"
         + (" (a run finished before its kill)" if completed_early else ""))

    cur = sorted((target / USER / "cur").iterdir())
    assert len(cur) == len(source), f"{len(cur)} files for {len(source)} messages: duplicates or losses"
    assert sorted(p.name for p in (target / USER / "tmp").iterdir()) == []
    s = postie.start(passwd=d.passwd_path, maildir=str(target / "%u"))
    assert listing(s.port) == source
    assert sorted(contents(s.port)) == sorted(contents(d.port))
    # A further run finds everything there.
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"{len(source)} already there" in r.stdout, r.stdout + r.stderr


def test_batch_migration_over_a_users_file(dovecot, postie, postie_bin, tmp_path):
    users = {USER: PASSWORD, "bob@example.org": "b0b-pw"}
    d = dovecot(users=users)
    fill(d.maildir(USER), n_numbered=2)
    fill(d.maildir("bob@example.org"), n_numbered=4, seed=8)
    d.fix_ownership()
    users_file = tmp_path / "users"
    users_file.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    target = tmp_path / "postie-mail"
    r = postie_cmd(postie_bin, ["migrate", "pop3", "--server", f"127.0.0.1:{d.port}", "--tls", "none",
                                "--users-file", str(users_file), "--to-maildir", str(target / "%d" / "%n")])
    assert r.stdout.count(" copied ") == 2, r.stdout
    s = postie.start(passwd=d.passwd_path, maildir=str(target / "%d" / "%n"))
    for u, p in users.items():
        assert listing(s.port, u, p) == listing(d.port, u, p)
    r = postie_cmd(postie_bin, ["migrate", "compare", "--a", f"127.0.0.1:{d.port}", "--a-tls", "none",
                                "--b", f"127.0.0.1:{s.port}", "--b-tls", "none", "--users-file", str(users_file),
                                "--json"])
    report = json.loads(r.stdout)
    assert report["same"] is True and [u["user"] for u in report["users"]] == list(users)


# --------------------------------------------------------------------------
# Misbehaving sources: a scripted POP3 server (bad input must stop cleanly, copying nothing wrong)
# --------------------------------------------------------------------------


class ScriptedPOP3(ScriptedServer):
    """A tiny POP3 server for bad-input cases: duplicate UIDLs, no UIDL, a connection that
    drops in the middle of a RETR."""

    capabilities = ["USER", "UIDL"]

    def __init__(self, messages: list[tuple[str, bytes]], *, no_uidl: bool = False, drop_in_retr: int | None = None):
        self.messages = messages
        self.no_uidl = no_uidl
        self.drop_in_retr = drop_in_retr
        self.deleted: list[int] = []
        super().__init__()

    def command(self, s: ScriptedSession, word: str, args: list[str]) -> bool:
        if word == "LIST":
            s.listing([f"{i} {len(canonical_crlf(m))}" for i, (_, m) in enumerate(self.messages, 1)])
        elif word == "UIDL":
            if self.no_uidl:
                s.reply("-ERR no UIDL here")
            else:
                s.listing([f"{i} {u}" for i, (u, _) in enumerate(self.messages, 1)])
        elif word == "RETR":
            n = int(args[0])
            if n == self.drop_in_retr:
                body = canonical_crlf(self.messages[n - 1][1])
                s.send(b"+OK\r\n" + body[: len(body) // 2])
                return False
            s.message(self.messages[n - 1][1])
        elif word == "DELE":
            s.marked.append(int(args[0]))
            s.reply("+OK")
        elif word == "QUIT":
            self.deleted += s.marked
            return super().command(s, word, args)
        else:
            return super().command(s, word, args)
        return True


def scripted_messages(n: int) -> list[tuple[str, bytes]]:
    return [(f"scripted-{i}", f"Subject: {i}\n\n.dot line {i}\nbody\n".encode()) for i in range(1, n + 1)]


def test_migration_refuses_bad_sources_and_resumes_after_a_dropped_connection(postie_bin, tmp_path):
    target = tmp_path / "mail" / USER
    base = ["migrate", "pop3", "--tls", "none", "--user", USER, "--to-maildir", str(target)]

    dup = scripted_messages(3)
    dup[2] = ("scripted-1", dup[2][1])
    s = ScriptedPOP3(dup)
    r = postie_cmd(postie_bin, base + ["--server", f"127.0.0.1:{s.port}"], env_password="x", check=False)
    s.close()
    assert r.returncode == 1 and "scripted-1 more than once" in r.stderr, r.stderr
    assert not (target / "cur").exists() or not list((target / "cur").iterdir())

    s = ScriptedPOP3(scripted_messages(3), no_uidl=True)
    r = postie_cmd(postie_bin, base + ["--server", f"127.0.0.1:{s.port}"], env_password="x", check=False)
    s.close()
    assert r.returncode == 1 and "no UIDL here" in r.stderr, r.stderr

    s = ScriptedPOP3(scripted_messages(5), drop_in_retr=4)
    r = postie_cmd(postie_bin, base + ["--server", f"127.0.0.1:{s.port}"], env_password="x", check=False)
    s.close()
    assert r.returncode == 1 and "run again to resume" in r.stderr, r.stderr
    s = ScriptedPOP3(scripted_messages(5))
    r = postie_cmd(postie_bin, base + ["--server", f"127.0.0.1:{s.port}", "--delete-source"], env_password="x")
    assert "2 copied" in r.stdout and "3 already there" in r.stdout, r.stdout
    assert sorted(s.deleted) == [1, 2, 3, 4, 5]
    s.close()
    files = sorted((target / "cur").iterdir())
    assert len(files) == 5 and not list((target / "tmp").iterdir())
    assert b".dot line 4\nbody\n" in b"".join(p.read_bytes() for p in files)
