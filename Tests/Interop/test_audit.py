"""The audit trail (`--audit-log`, docs/retention.md): exactly one JSON line per login, RETR, TOP,
committed deletion and logout, valid against the JSON Schema in docs/retention.md, never a password
or a body; TLS versions, SIGTERM, `-` and `--run-as`; and a logrotate cycle (rename + SIGHUP,
then real `logrotate -f` on contrib/logrotate/postie) that loses no line.

Tools: logrotate (Debian package `logrotate`; scripts/test installs it). A missing tool fails."""

from __future__ import annotations

import gzip
import json
import os
import poplib
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from kits.mail import ALICE, BOB, Maildir, make_passwd
from kits.tls import client_context, start_tls_server
from test_run_as import RUN_AS_USER, ensure_user

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "retention.md"
LOGROTATE_CONF = REPO / "contrib" / "logrotate" / "postie"
BODY_MARK = "body-text-that-must-never-be-logged"


def message(i: int, with_id: bool = True) -> bytes:
    mid = f"Message-ID: <audit-{i}@example.org>\n" if with_id else ""
    return (f"From: a@example.org\nTo: alice@example.org\nSubject: audit \"{i}\" \\ test\n{mid}\n"
            f"{BODY_MARK} {i}\nline 2\nline 3\n").encode()


def prefill(n: int):
    def fill(e):
        for user in ("alice", "bob"):
            md = Maildir(Path(e.template.replace("%u", user))).create()
            for i in range(1, n + 1):
                md.deliver(message(i, with_id=i != 3))
    return fill


def read_lines(*paths: Path) -> list[str]:
    lines: list[str] = []
    for p in paths:
        if not p.exists():
            continue
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        text = data.decode("utf-8")
        assert text == "" or text.endswith("\n"), f"{p} ends in a partial line"
        lines += text.splitlines()
    return lines


def events(*paths: Path) -> list[dict]:
    return [json.loads(line) for line in read_lines(*paths)]


def wait_events(paths: list[Path], event: str, count: int, timeout: float = 20) -> list[dict]:
    """Waits until `count` events of this kind are written (sessions end after the client left)."""
    deadline = time.monotonic() + timeout
    while True:
        found = events(*paths)
        if sum(1 for e in found if e["event"] == event) >= count:
            return found
        assert time.monotonic() < deadline, f"{count} {event} events not written within {timeout}s: {found}"
        time.sleep(0.05)


# --------------------------------------------------------------------------
# The JSON Schema of docs/retention.md, checked by a small validator of the keywords it uses
# --------------------------------------------------------------------------


def doc_schema() -> dict:
    text = DOC.read_text()
    block = re.search(r"### JSON Schema of the events\s*```json\n(.*?)\n```", text, re.S)
    assert block, "docs/retention.md has no JSON Schema block"
    return json.loads(block.group(1))


_TYPES = {"string": str, "integer": int, "object": dict, "null": type(None)}
_ANNOTATIONS = {"$schema", "$id", "title", "examples", "format"}


def schema_errors(value, schema: dict, path: str = "$") -> list[str]:
    errors: list[str] = []
    for key, rule in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key == "type":
            kinds = rule if isinstance(rule, list) else [rule]
            ok = any(isinstance(value, _TYPES[k]) and not (k == "integer" and isinstance(value, bool)) for k in kinds)
            if not ok:
                errors.append(f"{path}: {value!r} is not {rule}")
        elif key == "required":
            errors += [f"{path}: missing {name}" for name in rule if name not in value]
        elif key == "properties":
            for name, sub in rule.items():
                if isinstance(value, dict) and name in value:
                    errors += schema_errors(value[name], sub, f"{path}.{name}")
        elif key == "enum":
            if value not in rule:
                errors.append(f"{path}: {value!r} not in {rule}")
        elif key == "const":
            if value != rule:
                errors.append(f"{path}: {value!r} is not {rule!r}")
        elif key == "oneOf":
            matching = [i for i, sub in enumerate(rule) if not schema_errors(value, sub, path)]
            if len(matching) != 1:
                errors.append(f"{path}: matches {len(matching)} of the oneOf branches, not 1")
        elif key in ("minimum", "maximum"):
            if isinstance(value, int) and (value < rule if key == "minimum" else value > rule):
                errors.append(f"{path}: {value} breaks {key} {rule}")
        elif key in ("minLength", "maxLength"):
            if isinstance(value, str) and (len(value) < rule if key == "minLength" else len(value) > rule):
                errors.append(f"{path}: length {len(value)} breaks {key} {rule}")
        elif key == "pattern":
            if isinstance(value, str) and not re.search(rule, value):
                errors.append(f"{path}: {value!r} does not match {rule}")
        else:
            raise AssertionError(f"docs/retention.md's schema uses {key}, which this test's validator does not know")
    return errors


def check_lines(lines: list[str], secrets: list[str]) -> list[dict]:
    """Every line is one JSON object valid against the documented schema, with no secret and no body."""
    schema = doc_schema()
    parsed = []
    for line in lines:
        obj = json.loads(line)
        assert list(obj)[:3] == ["time", "event", "session"], line
        problems = schema_errors(obj, schema)
        assert not problems, f"{line}\n  " + "\n  ".join(problems)
        for secret in secrets:
            assert secret not in line, f"a password in the audit trail: {line}"
        assert BODY_MARK not in line, f"a message body in the audit trail: {line}"
        parsed.append(obj)
    return parsed


def login(port: int, user: tuple[str, str]) -> poplib.POP3:
    p = poplib.POP3("127.0.0.1", port, timeout=15)
    p.user(user[0])
    p.pass_(user[1])
    return p


def uidls(p: poplib.POP3) -> dict[int, str]:
    return {int(n): u for n, u in (line.decode().split() for line in p.uidl()[1])}


# --------------------------------------------------------------------------
# One line per event
# --------------------------------------------------------------------------


def test_one_line_per_login_retr_top_deletion_and_logout(env_factory, tmp_path):
    audit = tmp_path / "audit.log"
    env = env_factory(extra=["--audit-log", str(audit)], prefill=prefill(5))

    # alice: RETR, two TOPs, two deletions, QUIT.
    p = login(env.port, ALICE)
    alice_port = p.sock.getsockname()[1]
    alice_uidls = uidls(p)
    p.retr(1)
    p.top(2, 0)
    p.top(3, 2)
    p.dele(1)
    p.dele(4)
    assert p.quit().startswith(b"+OK")

    # bob: RETR and DELE, then the connection drops: nothing deleted, no delete line.
    p = login(env.port, BOB)
    p.retr(2)
    p.dele(2)
    p.sock.shutdown(socket.SHUT_RDWR)
    p.close()

    # A failed login is in the normal log only.
    with pytest.raises(poplib.error_proto):
        login(env.port, ("alice", "wrong-password-xyz"))
    env.server.wait_log(r"Login failed: user=<alice>")

    wait_events([audit], "logout", 2)
    parsed = check_lines(read_lines(audit), [ALICE[1], BOB[1], "wrong-password-xyz"])
    kinds = [e["event"] for e in parsed]
    assert sorted(kinds) == sorted(["login", "retr", "top", "top", "delete", "delete", "logout"]
                                   + ["login", "retr", "logout"]), kinds

    alice = [e for e in parsed if e["user"] == "alice"]
    assert [e["event"] for e in alice] == ["login", "retr", "top", "top", "delete", "delete", "logout"]
    assert len({e["session"] for e in alice}) == 1
    first = alice[0]
    assert first["method"] == "USER" and first["address"] == "127.0.0.1" and first["tls"] is None
    assert first["port"] == alice_port
    # The session id is the normal log's.
    assert env.server.log_lines(rf"Login: user=<alice>, .*session=<{re.escape(first['session'])}>")
    retr, top0, top2 = alice[1:4]
    assert (retr["message"], retr["uidl"], retr["message_id"]) == (1, alice_uidls[1], "<audit-1@example.org>")
    assert retr["octets"] == len(message(1).replace(b"\n", b"\r\n"))
    assert (top0["message"], top0["lines"], top0["message_id"]) == (2, 0, "<audit-2@example.org>")
    assert (top2["message"], top2["lines"], top2["message_id"]) == (3, 2, None)
    deleted = alice[4:6]
    assert [e["uidl"] for e in deleted] == [alice_uidls[1], alice_uidls[4]]
    assert [e["message_id"] for e in deleted] == ["<audit-1@example.org>", "<audit-4@example.org>"]
    assert [e["subject"] for e in deleted] == ['audit "1" \\ test', 'audit "4" \\ test']
    assert all(e["address"] == "127.0.0.1" for e in deleted)
    logout = alice[6]
    assert logout["ended"] == "quit"
    assert (logout["retrieved_messages"], logout["top_messages"], logout["deleted_messages"]) == (1, 2, 2)
    assert logout["deleted_octets"] == sum(len(message(i).replace(b"\n", b"\r\n")) for i in (1, 4))

    bob = [e for e in parsed if e["user"] == "bob"]
    assert [e["event"] for e in bob] == ["login", "retr", "logout"]
    assert bob[2]["ended"] == "dropped" and bob[2]["deleted_messages"] == 0

    assert stat.S_IMODE(audit.stat().st_mode) == 0o600


def test_tls_version_is_recorded(postie, tmp_path, pki):
    audit = tmp_path / "audit.log"
    srv = start_tls_server(postie, tmp_path, pki, extra=["--audit-log", str(audit)])
    ctx = client_context(pki.cafile)
    p = poplib.POP3_SSL("127.0.0.1", srv.tls, context=ctx, timeout=15)
    p.user(ALICE[0])
    p.pass_(ALICE[1])
    implicit = p.sock.version()
    p.quit()
    p = poplib.POP3("127.0.0.1", srv.plain, timeout=15)
    p.stls(context=ctx)
    p.user(BOB[0])
    p.pass_(BOB[1])
    stls = p.sock.version()
    p.quit()
    found = wait_events([audit], "logout", 2)
    logins = [e for e in check_lines(read_lines(audit), [ALICE[1], BOB[1]]) if e["event"] == "login"]
    assert [(e["user"], e["tls"]) for e in logins] == [("alice", implicit), ("bob", stls)], found
    assert implicit in ("TLSv1.2", "TLSv1.3")


def test_sigterm_writes_the_last_lines_before_exit(env_factory, tmp_path):
    audit = tmp_path / "audit.log"
    env = env_factory(extra=["--audit-log", str(audit)], prefill=prefill(2))
    p = login(env.port, ALICE)
    p.retr(1)
    p.dele(2)
    assert env.server.stop() == 0
    parsed = check_lines(read_lines(audit), [ALICE[1]])
    assert [e["event"] for e in parsed] == ["login", "retr", "logout"]
    assert parsed[-1]["ended"] == "shutdown" and parsed[-1]["deleted_messages"] == 0


def test_dash_writes_to_standard_error(env_factory):
    env = env_factory(extra=["--audit-log", "-"], prefill=prefill(1))
    p = login(env.port, BOB)
    p.top(1, 0)
    p.quit()
    lines = env.server.wait_log(r'^\{"time":"[^"]+","event":"logout"', timeout=20)
    trail = check_lines(env.server.log_lines(r'^\{"time":'), [BOB[1]])
    assert [e["event"] for e in trail] == ["login", "top", "logout"], lines


# --------------------------------------------------------------------------
# Rotation: rename + SIGHUP, then real logrotate
# --------------------------------------------------------------------------


def busy_sessions(port: int, count: int, done: list, errors: list) -> threading.Thread:
    """bob logs in, RETRs and TOPs message 1 and QUITs, `count` times: 4 lines each."""

    def run():
        try:
            for _ in range(count):
                p = login(port, BOB)
                p.retr(1)
                p.top(1, 0)
                p.quit()
                done.append(1)
        except Exception as e:  # reported by the test
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def assert_complete_sessions(parsed: list[dict]) -> None:
    """Each session's lines, in file order, are exactly login, its commands, logout."""
    by_session: dict[str, list[str]] = {}
    for e in parsed:
        by_session.setdefault(e["session"], []).append(e["event"])
    for session, kinds in by_session.items():
        assert kinds[0] == "login" and kinds[-1] == "logout" and "login" not in kinds[1:-1], (session, kinds)


def test_rename_and_sighup_lose_no_line(env_factory, tmp_path):
    audit = tmp_path / "audit.log"
    rotated = tmp_path / "audit.log.1"
    env = env_factory(extra=["--audit-log", str(audit)], prefill=prefill(2))

    # A session that spans the rotation.
    spanning = login(env.port, ALICE)
    spanning.retr(1)

    done, errors = [], []
    worker = busy_sessions(env.port, 30, done, errors)
    deadline = time.monotonic() + 30
    while len(done) < 10 and worker.is_alive():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    audit.rename(rotated)
    env.server.proc.send_signal(signal.SIGHUP)
    env.server.wait_log(r"SIGHUP: reopened the audit log", timeout=20)
    assert audit.exists()
    spanning.top(2, 1)
    spanning.dele(2)
    spanning.quit()
    worker.join(60)
    assert not errors, errors
    assert len(done) == 30

    wait_events([rotated, audit], "logout", 31)
    before, after = read_lines(rotated), read_lines(audit)
    assert before and after, "both files hold lines"
    parsed = check_lines(before + after, [ALICE[1], BOB[1]])
    kinds = [e["event"] for e in parsed]
    assert kinds.count("login") == 31 and kinds.count("logout") == 31
    assert kinds.count("retr") == 31 and kinds.count("top") == 31 and kinds.count("delete") == 1
    assert len(parsed) == 30 * 4 + 5
    assert_complete_sessions(parsed)
    spans = [e for e in parsed if e["user"] == "alice"]
    assert [e["event"] for e in spans] == ["login", "retr", "top", "delete", "logout"]
    assert spans[0] in events(rotated) and spans[-1] in events(audit)
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600


def test_run_as_user_creates_and_reopens_the_file(postie):
    """Opened after the privilege drop: the file and its successor belong to the run_as user."""
    assert os.geteuid() == 0, "this test starts the server as root"
    user = ensure_user(RUN_AS_USER)
    base = Path(tempfile.mkdtemp(prefix="postie-audit-runas-"))
    try:
        os.chmod(base, 0o755)
        pw = make_passwd(base)
        Maildir(base / "mail" / "bob").create().deliver(message(1))
        logs = base / "log"
        logs.mkdir()
        for root, dirs, files in os.walk(base):
            for n in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.chown(n, user.pw_uid, user.pw_gid)
        os.chmod(logs, 0o750)
        os.chmod(pw.path, 0o600)
        audit = logs / "audit.log"
        s = postie.start(passwd=pw.path, maildir=str(base / "mail" / "%u"), name="runas",
                         extra=["--run-as", RUN_AS_USER, "--audit-log", str(audit)])
        s.wait_log(r"master: Info: Audit trail to ")
        owner = audit.stat()
        assert (owner.st_uid, owner.st_gid, stat.S_IMODE(owner.st_mode)) == (user.pw_uid, user.pw_gid, 0o600)
        p = login(s.port, BOB)
        p.retr(1)
        p.quit()
        audit.rename(logs / "audit.log.1")
        s.proc.send_signal(signal.SIGHUP)
        s.wait_log(r"SIGHUP: reopened the audit log", timeout=20)
        assert audit.stat().st_uid == user.pw_uid
        p = login(s.port, BOB)
        p.quit()
        wait_events([logs / "audit.log.1", audit], "logout", 2)
        kinds = [e["event"] for e in check_lines(read_lines(logs / "audit.log.1", audit), [BOB[1]])]
        assert kinds == ["login", "retr", "logout", "login", "logout"]
        assert s.stop() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def logrotate_binary() -> str:
    path = shutil.which("logrotate") or ("/usr/sbin/logrotate" if os.access("/usr/sbin/logrotate", os.X_OK) else None)
    if path is None:
        pytest.fail("logrotate is missing (Debian package logrotate; scripts/test installs it)", pytrace=False)
    return path


def test_logrotate_with_the_contrib_file_loses_no_line(env_factory, tmp_path):
    binary = logrotate_binary()
    audit = tmp_path / "audit.log"
    env = env_factory(extra=["--audit-log", str(audit)], prefill=prefill(1))

    # contrib/logrotate/postie with this test's path and server instead of systemd's, and
    # without `su` (the test runs as the file's owner).
    conf_text = LOGROTATE_CONF.read_text()
    assert "/var/log/postie/audit.log {" in conf_text and "postrotate" in conf_text
    conf_text = conf_text.replace("/var/log/postie/audit.log", str(audit))
    conf_text = re.sub(r"(?m)^\s*su .*\n", "", conf_text)
    conf_text, n = re.subn(r"(?m)^(\s*)pid=\$\(systemctl .*$", rf"\g<1>pid={env.server.pid}", conf_text)
    assert n == 1, "the contrib file's postrotate no longer finds the pid with systemctl show"
    conf = tmp_path / "logrotate.conf"
    conf.write_text(conf_text)
    conf.chmod(0o644)
    state = tmp_path / "logrotate.state"

    total = 0
    done, errors = [], []
    for rotation in range(1, 3):
        worker = busy_sessions(env.port, 10, done, errors)
        deadline = time.monotonic() + 30
        while len(done) < total + 2:  # lines in the file (notifempty), sessions still to come
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.01)
        r = subprocess.run([binary, "-f", "-s", str(state), str(conf)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"logrotate failed:\n{r.stdout}\n{r.stderr}"
        env.server.wait_log(r"SIGHUP: reopened the audit log", count=rotation, timeout=20)
        worker.join(60)
        assert not errors, errors
        total += 10
    wait_events([audit, tmp_path / "audit.log.1", tmp_path / "audit.log.2.gz"], "logout", total)

    # After two rotations: the current file, .1 (delaycompress) and .2.gz.
    files = [tmp_path / "audit.log.2.gz", tmp_path / "audit.log.1", audit]
    assert all(f.exists() for f in files), sorted(p.name for p in tmp_path.iterdir())
    parsed = check_lines(read_lines(*files), [BOB[1]])
    kinds = [e["event"] for e in parsed]
    assert len(parsed) == total * 4 and kinds.count("login") == total and kinds.count("logout") == total, kinds
    assert_complete_sessions(parsed)
