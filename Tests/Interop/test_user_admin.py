"""`postie user`: concurrent add/passwd/del edits of the passwd-file lose nothing (also with a
running server), bad input is refused, and home and extra fields are written.
"""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
from pathlib import Path

from kits.authenv import (
    FAST,
    assert_auth_error,
    assert_logged_in,
    message_for,
    write_yaml,
)
from kits.mail import Maildir
from kits.pop3 import POP3Raw
from kits.sasl import capa_value
from kits.tools import run_postie


# --------------------------------------------------------------------------
# 4. Concurrent `postie user` edits
# --------------------------------------------------------------------------

PASSWD_LINE_RX = re.compile(r"^([^:\s#][^:\s]*):\{([A-Z0-9.-]+)\}([^:\n]*)(:[^:\n]*){0,6}$")


def parse_passwd(path: Path) -> dict[str, tuple[str, str]]:
    """user -> (scheme, line); asserts every line is a comment, blank, or a well-formed entry."""
    users: dict[str, tuple[str, str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line == "" or line.startswith("#"):
            continue
        m = PASSWD_LINE_RX.match(line)
        assert m, f"{path}:{n}: malformed line {line!r}"
        assert m.group(1) not in users, f"{path}:{n}: user {m.group(1)} appears twice"
        users[m.group(1)] = (m.group(2), line)
    return users


def run_concurrently(postie_bin, jobs: list[tuple[list[str], str | None]], timeout: float = 120):
    """Starts every job first (each blocks reading its password), then feeds all stdins at once."""
    procs = [subprocess.Popen([str(postie_bin)] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for args, _ in jobs]
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def feed(i: int) -> None:
        barrier.wait()
        stdin = jobs[i][1]
        try:
            out, err = procs[i].communicate(None if stdin is None else (stdin + "\n").encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            procs[i].kill()
            out, err = procs[i].communicate()
        results[i] = (procs[i].returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_user_add_loses_nothing(postie, postie_bin, tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("# managed by postie user\n\n")
    n = 36
    pw = {f"user{i}": f"pw-{i}-{random.randrange(10**9)}" for i in range(n)}
    scheme = {u: ("PLAIN" if i % 2 else "SHA512-CRYPT") for i, u in enumerate(pw)}
    jobs = [(["user", "add", u, "--passwd-file", str(passwd), "--scheme", scheme[u]], pw[u]) for u in pw]
    results = run_concurrently(postie_bin, jobs)
    for (args, _), (rc, out, err) in zip(jobs, results):
        assert rc == 0, f"postie {' '.join(args)}: exit {rc}: {err}"
    users = parse_passwd(passwd)
    assert set(users) == set(pw), f"lost: {sorted(set(pw) - set(users))}, extra: {sorted(set(users) - set(pw))}"
    for u in pw:
        assert users[u][0] == scheme[u], f"{u}: scheme {users[u][0]}, want {scheme[u]}"
        assert pw[u] not in users[u][1] or scheme[u] == "PLAIN", f"{u}: clear password in a {scheme[u]} line"
    assert passwd.read_text().startswith("# managed by postie user\n"), "the comment header was lost"
    assert not list(tmp_path.glob("passwd.tmp*")), f"temporary files left: {list(tmp_path.glob('passwd.tmp*'))}"
    # `postie user list` lists them all with their schemes.
    r = run_postie(postie_bin, ["user", "list", "--passwd-file", str(passwd)])
    assert r.returncode == 0, r.stderr
    listed = dict(l.split("\t") for l in r.stdout.decode().splitlines())
    assert listed == {u: "{" + scheme[u] + "}" for u in pw}, f"user list: {listed}"
    # Every user can log in over POP3.
    template = str(tmp_path / "mail" / "%u")
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    s = postie.start(passwd=passwd, maildir=template, extra=["--config", str(cfg)])
    for u in pw:
        with POP3Raw(s.host, s.port) as c:
            r = c.try_login(u, pw[u])
            assert r.startswith("+OK"), f"{u} ({scheme[u]}) cannot log in: {r!r}"
            c.quit()


def test_concurrent_add_passwd_del_mixed_with_running_server(postie, postie_bin, tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("# header comment\n")
    old = {f"keep{i}": f"old-{i}" for i in range(10)}
    gone = {f"gone{i}": f"gone-{i}" for i in range(10)}
    for u, p in {**old, **gone}.items():
        r = run_postie(postie_bin, ["user", "add", u, "--passwd-file", str(passwd), "--scheme", "PLAIN"], p)
        assert r.returncode == 0, r.stderr
    template = str(tmp_path / "mail" / "%u")
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    s = postie.start(passwd=passwd, maildir=template, extra=["--config", str(cfg)])
    with POP3Raw(s.host, s.port) as c:
        assert c.try_login("keep0", old["keep0"]).startswith("+OK")
        c.quit()

    new = {f"new{i}": f"new-{i}" for i in range(20)}
    changed = {u: f"changed-{i}" for i, u in enumerate(old)}
    jobs = []
    jobs += [(["user", "add", u, "--passwd-file", str(passwd)], p) for u, p in new.items()]
    jobs += [(["user", "passwd", u, "--passwd-file", str(passwd), "--scheme", "SHA256-CRYPT"], p)
             for u, p in changed.items()]
    jobs += [(["user", "del", u, "--passwd-file", str(passwd)], None) for u in gone]
    random.Random(7).shuffle(jobs)
    results = run_concurrently(postie_bin, jobs)
    for (args, _), (rc, out, err) in zip(jobs, results):
        assert rc == 0, f"postie {' '.join(args)}: exit {rc}: {err}"

    users = parse_passwd(passwd)
    assert set(users) == set(new) | set(changed), (
        f"lost: {sorted((set(new) | set(changed)) - set(users))}, not deleted: {sorted(set(users) & set(gone))}")
    assert all(users[u][0] == "SHA256-CRYPT" for u in changed), {u: users[u][0] for u in changed}
    assert all(users[u][0] == "SHA512-CRYPT" for u in new)
    assert passwd.read_text().startswith("# header comment\n")
    r = run_postie(postie_bin, ["user", "list", "--passwd-file", str(passwd)])
    assert sorted(l.split("\t")[0] for l in r.stdout.decode().splitlines()) == sorted(users)

    # The running server picked up the new file (it re-reads on change).
    deadline = time.monotonic() + 60
    for u, p in list(new.items())[::4] + list(changed.items())[::3]:
        while True:
            with POP3Raw(s.host, s.port) as c:
                r = c.try_login(u, p)
                c.quit()
            if r.startswith("+OK") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.startswith("+OK"), f"{u} cannot log in after the edits: {r!r}"
    for u, p in list(old.items())[:3]:
        with POP3Raw(s.host, s.port) as c:
            assert_auth_error(c.try_login(u, p), f"{u} with the old password")
    for u, p in list(gone.items())[:3]:
        with POP3Raw(s.host, s.port) as c:
            assert_auth_error(c.try_login(u, p), f"deleted {u}")


def test_user_commands_refuse_bad_input(postie_bin, tmp_path):
    passwd = tmp_path / "passwd"
    assert run_postie(postie_bin, ["user", "add", "bob", "--passwd-file", str(passwd)], "pw1").returncode == 0
    before = passwd.read_bytes()
    cases = [
        (["user", "add", "bob", "--passwd-file", str(passwd)], "pw2", "duplicate user"),
        (["user", "add", "carol", "--passwd-file", str(passwd)], "", "empty password"),
        (["user", "add", "carol", "--passwd-file", str(passwd)], None, "no password on stdin"),
        (["user", "add", "ca:rol", "--passwd-file", str(passwd)], "pw", "':' in the name"),
        (["user", "add", "ca rol", "--passwd-file", str(passwd)], "pw", "space in the name"),
        (["user", "add", "carol", "--passwd-file", str(passwd), "--scheme", "NO-SUCH-SCHEME"], "pw", "unknown scheme"),
        (["user", "add", "carol", "--passwd-file", str(passwd), "--password", "pw"], "pw", "password as an argument"),
        (["user", "passwd", "nobody", "--passwd-file", str(passwd)], "pw", "passwd of an unknown user"),
        (["user", "del", "nobody", "--passwd-file", str(passwd)], None, "del of an unknown user"),
        (["pw", "hash", "--password", "pw"], "pw", "pw hash with the password as an argument"),
    ]
    for args, stdin, what in cases:
        r = subprocess.run([str(postie_bin)] + args, input=b"" if stdin is None else (stdin + "\n").encode(),
                           capture_output=True, timeout=30)
        assert r.returncode != 0, f"{what}: postie {' '.join(args)} succeeded: {r.stdout!r}"
        assert passwd.read_bytes() == before, f"{what}: the passwd-file changed"


def test_user_add_plain_password_with_colon_is_refused_or_works(postie, postie_bin, tmp_path):
    """A {PLAIN} password is stored verbatim in a ':'-separated line; one containing ':' must
    either be refused or still log in with exactly that password (and not with a prefix)."""
    passwd = tmp_path / "passwd"
    r = run_postie(postie_bin, ["user", "add", "colon", "--passwd-file", str(passwd), "--scheme", "PLAIN"], "ab:cd")
    if r.returncode != 0:
        assert "colon" not in passwd.read_text() if passwd.exists() else True
        return
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    s = postie.start(passwd=passwd, maildir=str(tmp_path / "mail" / "%u"), extra=["--config", str(cfg)])
    with POP3Raw(s.host, s.port) as c:
        whole = c.try_login("colon", "ab:cd")
        prefix = c.try_login("colon", "ab")
    assert prefix.startswith("-ERR"), (f"`postie user add --scheme PLAIN` with password 'ab:cd' wrote "
                                       f"{passwd.read_text()!r}: the prefix 'ab' logs in")
    assert whole.startswith("+OK"), f"password 'ab:cd' was accepted by `user add` but cannot log in: {whole!r}"


def test_user_add_home_and_extra_fields(postie, postie_bin, tmp_path):
    passwd = tmp_path / "passwd"
    home = tmp_path / "homes" / "dora"
    r = run_postie(postie_bin, ["user", "add", "dora", "--passwd-file", str(passwd), "--home", str(home),
                                "--extra", "login_delay=7 expire=30"], "dora-pw")
    assert r.returncode == 0, r.stderr
    line = [l for l in passwd.read_text().splitlines() if l.startswith("dora:")][0]
    f = line.split(":")
    assert len(f) == 8 and f[5] == str(home) and f[7] == "login_delay=7 expire=30", f"line {line!r}"
    Maildir(home / "Maildir").deliver(message_for("dora"))
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    s = postie.start(passwd=passwd, maildir="%h/Maildir", extra=["--config", str(cfg)])
    with POP3Raw(s.host, s.port) as c:
        assert_logged_in(c, c.login("dora", "dora-pw"), "dora", "user with --home")
        caps = c.capa()
        assert capa_value(caps, "LOGIN-DELAY") == "7" and capa_value(caps, "EXPIRE") == "30", caps
    # passwd keeps home and extra fields.
    assert run_postie(postie_bin, ["user", "passwd", "dora", "--passwd-file", str(passwd)], "dora-pw2").returncode == 0
    line2 = [l for l in passwd.read_text().splitlines() if l.startswith("dora:")][0]
    assert line2.split(":")[2:] == f[2:], f"passwd changed other fields: {line!r} -> {line2!r}"
