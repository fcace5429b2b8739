"""`postie admin` over the control socket (docs/admin.md): who lists a live poplib session, kick
ends it without applying its DELEs, penalty shows a locked-out address and unban lifts it,
reload does what SIGHUP does; the socket is mode 0600, owned by the --run-as user, and a stale
one is replaced.
"""

from __future__ import annotations

import json
import os
import poplib
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

from kits.launcher import LOCKOUT_CONFIG, ServerError, admin, control_socket
from kits.mail import ALICE, BOB, Maildir
from kits.pop3 import POP3Raw



def fill(env, user: str, count: int) -> None:
    box = env.maildir(user)
    for i in range(count):
        box.deliver(f"Subject: message {i + 1}\r\n\r\nbody {i + 1}\r\n".encode())


def test_who_lists_a_poplib_session_and_kick_ends_it_without_deleting(env_factory, postie_bin):
    env = env_factory(prefill=lambda e: fill(e, "alice", 2))
    client = poplib.POP3(env.host, env.port, timeout=15)
    client.user(ALICE[0])
    client.pass_(ALICE[1])
    client.dele(1)
    client_port = client.sock.getsockname()[1]

    who = admin(postie_bin, env.server, "who")
    assert who.returncode == 0, who.stderr
    header, *rows = who.stdout.splitlines()
    assert header.split() == ["USER", "ADDRESS", "SINCE", "STATE", "TLS", "BYTES", "SENT"]
    assert len(rows) == 1, who.stdout
    assert rows[0].split()[:2] == ["alice", "127.0.0.1"]
    assert rows[0].split()[3:5] == ["TRANSACTION", "none"]
    # Columns are aligned: every row's STATE starts where the header's does.
    assert rows[0].index("TRANSACTION") == header.index("STATE")

    listed = admin(postie_bin, env.server, "who", "--json")
    assert listed.returncode == 0, listed.stderr
    answer = json.loads(listed.stdout)
    assert answer["ok"] is True
    [session] = answer["sessions"]
    assert (session["user"], session["address"], session["port"]) == ("alice", "127.0.0.1", client_port)
    assert session["state"] == "TRANSACTION" and "tls" not in session and session["protocol"] == "pop3"
    assert session["bytes_sent"] > len("+OK Logged in.\r\n")
    assert session["since"].endswith("Z")

    # Not bob, not from another address.
    assert admin(postie_bin, env.server, "kick", BOB[0]).returncode == 1
    other = admin(postie_bin, env.server, "kick", "alice", "--address", "192.0.2.0/24")
    assert other.returncode == 1 and "kicked 0 sessions" in other.stdout

    kicked = admin(postie_bin, env.server, "kick", "ALICE", "--address", "127.0.0.1")  # normalised as logins are
    assert kicked.returncode == 0, kicked.stderr
    assert "kicked 1 session" in kicked.stdout
    assert client.file.readline() == b"-ERR [SYS/TEMP] Session ended by the administrator.\r\n"
    assert client.file.readline() == b""  # closed
    client.close()
    env.server.wait_log(r"pop3\(alice\): Info: Disconnected: Kicked by the administrator")
    assert admin(postie_bin, env.server, "who").stdout.splitlines()[1:] == []

    # The DELE was not applied: both messages are still there.
    again = poplib.POP3(env.host, env.port, timeout=15)
    again.user(ALICE[0])
    again.pass_(ALICE[1])
    assert again.stat()[0] == 2
    again.quit()
    assert len(env.maildir("alice").message_files()) == 2


def test_a_kicked_session_s_quit_deletes_nothing(env_factory, postie_bin):
    """A QUIT the client sends after the kick (read before the input closed, or not) commits nothing."""
    env = env_factory(prefill=lambda e: fill(e, "alice", 3))
    with POP3Raw(env.host, env.port) as c:
        c.login(*ALICE)
        c.ok("DELE 1")
        c.ok("DELE 2")
        assert admin(postie_bin, env.server, "kick", "alice").returncode == 0
        try:
            c.sendline("QUIT")
        except OSError:
            pass
        rest = c.expect_closed()
        assert b"+OK" not in rest, rest
    env.server.wait_log(r"Kicked by the administrator")
    assert len(env.maildir("alice").message_files()) == 3


def test_penalty_shows_a_locked_address_and_unban_lets_it_in_at_once(env_factory, postie_bin, tmp_path):
    config = tmp_path / "lockout.yaml"
    config.write_text(LOCKOUT_CONFIG)
    env = env_factory(extra=["--config", str(config)])
    attacker = "127.0.0.2"
    for i in range(3):
        with POP3Raw(env.host, env.port, source=attacker) as c:
            c.ok(f"USER {BOB[0]}")
            assert c.cmd(f"PASS wrong-{i}").startswith("-ERR")
    with POP3Raw(env.host, env.port, source=attacker, read_greeting=False) as c:
        assert c.readline().startswith(b"-ERR [SYS/TEMP] Too many failed logins")

    listed = admin(postie_bin, env.server, "penalty", "--json")
    assert listed.returncode == 0, listed.stderr
    penalties = json.loads(listed.stdout)["penalties"]
    locked = [p for p in penalties if p["kind"] == "address" and p["key"] == attacker]
    assert len(locked) == 1, penalties
    assert locked[0]["status"] == "locked"
    assert 590 <= locked[0]["remaining_seconds"] <= 600
    accounts = [p for p in penalties if p["kind"] == "account"]
    assert [(p["key"], p["failures"], p["status"]) for p in accounts] == [("bob", 3, "delayed")]

    table = admin(postie_bin, env.server, "penalty")
    assert table.returncode == 0
    row = next(line for line in table.stdout.splitlines() if attacker in line)
    assert row.split()[:3] == ["address", attacker, "locked"]

    # The account's failures (a successful login would clear them too).
    assert admin(postie_bin, env.server, "unban", "BOB").returncode == 0
    unban = admin(postie_bin, env.server, "unban", attacker)
    assert unban.returncode == 0, unban.stderr
    assert attacker in unban.stdout
    with POP3Raw(env.host, env.port, source=attacker) as c:
        c.login(*BOB)
        c.ok("STAT")
        c.quit()
    assert admin(postie_bin, env.server, "unban", attacker).returncode == 1
    assert json.loads(admin(postie_bin, env.server, "penalty", "--json").stdout)["penalties"] == []


def test_admin_reload_applies_the_config_as_sighup_does(env_factory, postie_bin, tmp_path):
    config = tmp_path / "policy.yaml"
    config.write_text("deny: []\n")
    env = env_factory(extra=["--config", str(config)])
    with POP3Raw(env.host, env.port, source="127.0.0.2") as c:
        assert c.greeting.startswith(b"+OK")

    config.write_text('deny: ["127.0.0.2/32"]\n')
    reload = admin(postie_bin, env.server, "reload")
    assert reload.returncode == 0, reload.stderr
    assert reload.stdout.strip() == "reloaded policy"
    env.server.wait_log(r"master: Info: admin reload: reloaded policy")
    with POP3Raw(env.host, env.port, source="127.0.0.2", read_greeting=False) as c:
        assert c.readline_raw() == b""
    with POP3Raw(env.host, env.port, source="127.0.0.3") as c:
        assert c.greeting.startswith(b"+OK")

    config.write_text('deny: ["not-a-cidr"]\n')
    broken = admin(postie_bin, env.server, "reload")
    assert broken.returncode == 2
    assert "not-a-cidr" in broken.stderr
    assert env.server.alive()


def test_the_socket_is_0600_and_unreachable_servers_exit_69(env, postie_bin):
    path = control_socket(env.server)
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    assert admin(postie_bin, env.server, "who").returncode == 0
    # A client may keep its connection for further requests; shutdown does not wait for it.
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.connect(path)
    held.sendall(b'{"command":"who"}\n{"command":"nonsense"}\n')
    answers = held.makefile("rb")
    assert json.loads(answers.readline()) == {"ok": True, "sessions": []}
    assert json.loads(answers.readline())["ok"] is False
    # A line over 4096 bytes is refused even when it arrives whole, and the connection ends.
    long = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    long.connect(path)
    long.sendall(b'{"command":"who","x":"' + b"a" * 5000 + b'"}\n')
    refused = long.makefile("rb")
    answer = json.loads(refused.readline())
    assert answer["ok"] is False and "longer than 4096" in answer["error"], answer
    assert refused.readline() == b"", "the connection is closed after an overlong line"
    long.close()
    assert env.server.stop() == 0
    held.close()
    assert not os.path.exists(path), "the socket file is removed at shutdown"
    gone = admin(postie_bin, path, "who")
    assert gone.returncode == 69
    assert "cannot reach" in gone.stderr


def test_a_stale_socket_is_replaced_and_a_live_one_is_not(postie, tmp_path, postie_bin):
    from kits.mail import make_passwd
    directory = Path(tempfile.mkdtemp(prefix="postie-ctl-"))
    try:
        path = str(directory / "control.sock")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()  # a socket file nothing answers on, as a killed server leaves
        pw = make_passwd(tmp_path)
        template = str(tmp_path / "mail" / "%u")
        first = postie.start(passwd=pw.path, maildir=template, extra=["--control-socket", path])
        assert admin(postie_bin, path, "who").returncode == 0
        second = postie.make(passwd=pw.path, maildir=template, extra=["--control-socket", path])
        try:
            second.start(ready_timeout=15)
            raise AssertionError("a second server took over a live control socket")
        except ServerError:
            pass
        assert "another server answers on" in second.log_text()
        assert admin(postie_bin, path, "who").returncode == 0
        first.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_the_socket_belongs_to_the_run_as_user(postie, postie_bin):
    from test_run_as import RUN_AS_USER, ensure_user
    user = ensure_user(RUN_AS_USER)
    base = Path(tempfile.mkdtemp(prefix="postie-runas-"))
    try:
        os.chmod(base, 0o755)
        passwd = base / "passwd"
        passwd.write_text(f"{BOB[0]}:{{PLAIN}}{BOB[1]}::::::\n")
        os.chmod(passwd, 0o644)
        path = str(base / "control.sock")
        server = postie.start(passwd=passwd, maildir=str(base / "mail" / "%u"),
                              extra=["--run-as", RUN_AS_USER, "--control-socket", path])
        info = os.stat(path)
        assert (info.st_uid, info.st_gid) == (user.pw_uid, user.pw_gid)
        assert stat.S_IMODE(info.st_mode) == 0o600
        # The run_as user can use it.
        as_user = subprocess.run(
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
             str(postie_bin), "admin", "who", "--control-socket", path],
            capture_output=True, text=True, timeout=30)
        assert as_user.returncode == 0, as_user.stderr
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_who_shows_the_tls_version_of_a_stls_session(env_factory, postie_bin, pki):
    from kits.tls import client_context
    env = env_factory(extra=["--tls-cert", str(pki.a.cert), "--tls-key", str(pki.a.key)])
    with POP3Raw(env.host, env.port) as c:
        c.ok("STLS")
        c.starttls(client_context(pki.cafile))
        # Before login the connection is listed only with --all, in AUTHORIZATION.
        assert json.loads(admin(postie_bin, env.server, "who", "--json").stdout)["sessions"] == []
        [pending] = json.loads(admin(postie_bin, env.server, "who", "--json", "--all").stdout)["sessions"]
        assert pending["state"] == "AUTHORIZATION" and "user" not in pending
        c.login(*BOB)
        [session] = json.loads(admin(postie_bin, env.server, "who", "--json").stdout)["sessions"]
        assert session["user"] == "bob"
        assert session["tls"] == c.version
        assert session["tls"] in ("TLSv1.2", "TLSv1.3")
        row = admin(postie_bin, env.server, "who").stdout.splitlines()[1]
        assert session["tls"] in row.split()
        c.quit()
