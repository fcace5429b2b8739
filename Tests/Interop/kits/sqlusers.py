"""What the `sql:FILE` interop tests share, whatever the database (test_userdb_sql.py on
PostgreSQL, test_userdb_mysql.py on MariaDB): PostfixAdmin's two users with `doveadm pw`
hashes, a server on the file, and POP3 logins that return the first message or the refusal."""

from __future__ import annotations

import poplib
import subprocess
import time
from pathlib import Path

import pytest

from kits.metrics import wait_metrics

USERS = {
    "alice@example.org": ("SHA512-CRYPT", "Alice-S3cret!pw"),
    "bob@example.org": ("BLF-CRYPT", "b0b's pass"),
}


def doveadm_hash(doveadm: str, scheme: str, password: str) -> str:
    r = subprocess.run([doveadm, "pw", "-s", scheme, "-p", password], capture_output=True, text=True, timeout=60, check=True)
    return r.stdout.strip()


def serve(postie, conf: Path, *extra: str):
    """Postie on the file as passdb and userdb, with a 3 s database timeout."""
    return postie.start(passwd=None, maildir="~", extra=[
        "--passdb", f"sql:{conf}", "--userdb", f"sql:{conf}", "--database-connect-timeout", "3",
        "--auth-failure-delay", "0", *extra])


def login(server, user: str, password: str) -> poplib.POP3:
    client = poplib.POP3(server.host, server.port, timeout=30)
    client.user(user)
    try:
        client.pass_(password)
    except poplib.error_proto:
        client.close()
        raise
    return client


def first_message(server, user: str, password: str) -> bytes:
    client = login(server, user, password)
    try:
        assert client.stat()[0] == 1
        return b"\r\n".join(client.retr(1)[1])
    finally:
        client.quit()


def refusal(server, user: str, password: str) -> str:
    with pytest.raises(poplib.error_proto) as failure:
        login(server, user, password).quit()
    return failure.value.args[0].decode()


def recovers(server, user: str, password: str) -> None:
    """Logs in once the database is back: the pool reconnects by itself, maybe after a moment."""
    for _ in range(60):
        try:
            assert f"hello {user.split('@')[0]}".encode() in first_message(server, user, password)
            return
        except poplib.error_proto as e:
            assert "[SYS/TEMP]" in e.args[0].decode()
            time.sleep(0.5)
    pytest.fail("no login after the database came back:\n" + server.log_tail())


def logs_users_in_and_refuses_hostile_names(server, hostile: tuple[str, ...]) -> None:
    """Each user reads their own Maildir (also with the name in capitals: auth_username_format
    %Lu); a wrong password, an unknown user and each hostile name are refused as wrong. With
    the test's own failures, stay below the lockout threshold (ten from one address)."""
    for user, (_, password) in USERS.items():
        assert f"hello {user.split('@')[0]}".encode() in first_message(server, user, password)
        assert b"hello" in first_message(server, user.upper(), password)
    assert refusal(server, "alice@example.org", USERS["bob@example.org"][1]) == "-ERR [AUTH] Authentication failed."
    assert refusal(server, "nobody@example.org", "x") == "-ERR [AUTH] Authentication failed."
    # A hostile name is a bound parameter: no one logs in with it.
    for name in hostile:
        assert refusal(server, name, USERS["alice@example.org"][1]) == "-ERR [AUTH] Authentication failed.", name


def three_logins_are_sys_temp(server, metrics_port: int, user: str, password: str) -> None:
    """With the database down: [SYS/TEMP] three times, counted as unavailable (not failed) logins."""
    for _ in range(3):
        assert refusal(server, user, password) == "-ERR [SYS/TEMP] Temporary server failure, try again later."
    wait_metrics(metrics_port, lambda sc: sc.get("pop3_logins_total", result="unavailable", mechanism="USER", tls="no") == 3,
                 what="three logins counted as unavailable")
