"""--run-as: started as root, the server binds, reads its files and drops to an unprivileged
user in every thread, then serves mail.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from kits.launcher import HOST
from kits.mail import ALICE, BOB, canonical_crlf, Maildir, make_passwd
from kits.pop3 import POP3Raw
from kits.tls import (
    client_context,
    proc_ids,
    thread_ids,
)


# --------------------------------------------------------------------------
# 9. --run-as
# --------------------------------------------------------------------------

RUN_AS_USER = "postietest"


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", name], capture_output=True)
        assert r.returncode == 0, f"useradd {name}: {r.stderr.decode()}"
        return pwd.getpwnam(name)


def privileged_free_port() -> int:
    for p in range(1023, 900, -1):
        with socket.socket() as s:
            try:
                s.bind((HOST, p))
                return p
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


def test_run_as_drops_root_and_serves_mail(postie, tmp_path, pki):
    assert os.geteuid() == 0, "this test starts the server as root"
    user = ensure_user(RUN_AS_USER)
    uid, gid = user.pw_uid, user.pw_gid
    # Outside pytest's 0700 temp tree, so that the unprivileged user can reach it.
    base = Path(tempfile.mkdtemp(prefix="postie-runas-"))
    try:
        os.chmod(base, 0o755)
        pw = make_passwd(base)
        mail = base / "mail"
        md = Maildir(mail / "alice").create()
        msg = b"From: a@example.org\nSubject: run-as\n\n.dotted\nbody\n"
        md.deliver(msg)
        for root, dirs, files in os.walk(base):
            for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.chown(n, uid, gid)
        os.chmod(pw.path, 0o600)
        port = privileged_free_port()
        cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
        pki.a.install(cert, key)  # root-only (0600): read before the switch
        s = postie.make(passwd=pw.path, maildir=str(mail / "%u"), listen=[(HOST, port)],
                        extra=["--run-as", RUN_AS_USER, "--tls-cert", str(cert), "--tls-key", str(key)],
                        name="runas")
        s.listens = []  # start() must not probe the port: the first connection is the test's
        s.start()
        s.wait_log(r"master: Info: Running as ")
        s.wait_log(r"passwd-file\(.*\): Info: loaded 2 users")
        problems = []
        ids = proc_ids(s.pid)
        if ids["Uid"] != [uid] * 4 or ids["Gid"] != [gid] * 4:
            problems.append(f"/proc/{s.pid}/status: Uid {ids['Uid']} Gid {ids['Gid']} State {ids.get('State')}, "
                            f"want uid {uid} gid {gid} (real, effective, saved, fs)")
        threads = thread_ids(s.pid)
        root_threads = {tid: (t["Uid"], t["Gid"], t.get("State")) for tid, t in threads.items()
                        if t["Uid"] != [uid] * 4 or t["Gid"] != [gid] * 4}
        if root_threads:
            problems.append(f"{len(root_threads)} of {len(threads)} threads kept other credentials: {root_threads}")
        ctx = client_context(pki.cafile)
        try:
            with POP3Raw(HOST, port) as c:
                c.ok("STLS")
                c.starttls(ctx)
                c.login(*ALICE)
                assert c.retr(1) == canonical_crlf(msg)
                c.ok("DELE 1")
                c.ok("QUIT")
            assert md.message_files() == [], "DELE+QUIT did not remove the message as the unprivileged user"
            # bob's Maildir does not exist yet: the server creates it as postietest.
            with POP3Raw(HOST, port) as c:
                c.login(*BOB)
                c.ok("QUIT")
            st = (mail / "bob").stat()
            assert (st.st_uid, st.st_gid) == (uid, gid), f"new Maildir owned by {st.st_uid}:{st.st_gid}"
            uidlist = md.path / "postie-uidlist"
            if uidlist.exists():
                assert uidlist.stat().st_uid == uid, f"postie-uidlist owned by uid {uidlist.stat().st_uid}"
        except (AssertionError, EOFError, OSError) as e:
            time.sleep(0.3)
            problems.append(f"serving mail as {RUN_AS_USER} failed: {type(e).__name__}: {e}; server "
                            f"{'alive' if s.alive() else f'exited with {s.proc.returncode}'}; "
                            f"log tail: {s.log_tail(2)!r}")
        assert not problems, "--run-as: " + " | ".join(problems)
        s.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
