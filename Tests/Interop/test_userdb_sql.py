"""`--passdb sql:FILE --userdb sql:FILE` on a PostfixAdmin `mailbox` table in a real
PostgreSQL, with a dovecot-sql.conf.ext as PostfixAdmin's Dovecot instructions write it
(docs/users.md): {SHA512-CRYPT} and {BLF-CRYPT} passwords made by `doveadm pw`, the right
Maildir per user, a stopped database that is [SYS/TEMP] and recovers without a restart, and
the auth cache (a changed password after the TTL, at once after SIGHUP)."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from kits import pg
from kits.launcher import free_port, wait_port
from kits.mail import Maildir
from kits.sqlusers import USERS, doveadm_hash, first_message, login, logs_users_in_and_refuses_hostile_names, recovers, refusal, serve, three_logins_are_sys_temp


# PostfixAdmin's schema (the columns Dovecot's queries read; the rest as PostfixAdmin has them).
SCHEMA = """
CREATE TABLE mailbox (
  username varchar(255) PRIMARY KEY, password varchar(255) NOT NULL, name varchar(255) NOT NULL DEFAULT '',
  maildir varchar(255) NOT NULL DEFAULT '', quota bigint NOT NULL DEFAULT 0, local_part varchar(255) NOT NULL,
  domain varchar(255) NOT NULL, created timestamptz NOT NULL DEFAULT now(), modified timestamptz NOT NULL DEFAULT now(),
  active boolean NOT NULL DEFAULT true)
"""

# As PostfixAdmin's DOVECOT.txt writes it, with its /var/vmail moved under the test's directory.
SQL_CONF = """\
# dovecot-sql.conf.ext, PostgreSQL (PostfixAdmin DOVECOT.txt)
driver = pgsql
connect = host=127.0.0.1 port={port} dbname=postfix user={user} password={password}
default_pass_scheme = SHA512-CRYPT

user_query = SELECT '{vmail}/' || maildir AS home, 1001 AS uid, 1001 AS gid FROM mailbox WHERE username = '%u' AND active = '1'
password_query = SELECT username AS user, password, '{vmail}/' || maildir AS userdb_home, \\
  'maildir:{vmail}/' || maildir AS userdb_mail, 1001 AS userdb_uid, 1001 AS userdb_gid \\
  FROM mailbox WHERE username = '%u' AND active = '1'
iterate_query = SELECT username AS user FROM mailbox
"""


@pytest.fixture
def postfix(tmp_path, doveadm):
    """A PostgreSQL of its own (this test stops it), holding PostfixAdmin's table."""
    server = pg.start()  # under /tmp: the postgres user cannot enter pytest's 0700 directories
    try:
        server.create_database("postfix")
        server.psql(SCHEMA, database="postfix")
        for user, (scheme, password) in USERS.items():
            local, domain = user.split("@")
            stored = doveadm_hash(doveadm, scheme, password)
            assert stored.startswith("{" + scheme + "}"), stored
            server.psql(f"INSERT INTO mailbox (username, password, maildir, local_part, domain) "
                        f"VALUES ('{user}', '{stored}', '{domain}/{local}/', '{local}', '{domain}')", database="postfix")
        vmail = tmp_path / "vmail"
        for user in USERS:
            local, domain = user.split("@")
            Maildir(vmail / domain / local).create().deliver(f"Subject: for {user}\r\n\r\nhello {local}\r\n".encode())
        conf = tmp_path / "dovecot-sql.conf.ext"
        conf.write_text(SQL_CONF.format(port=server.port, user=pg.SUPERUSER, password=server.password, vmail=vmail))
        conf.chmod(0o600)
        yield server, conf
    finally:
        server.stop()


def test_postfixadmin_table_logs_users_in_to_their_maildirs(postie, postfix):
    _, conf = postfix
    server = serve(postie, conf)
    # (USER takes no spaces; the unit tests try names with spaces through the database itself.)
    logs_users_in_and_refuses_hostile_names(server, ("x'OR'1'='1", "alice@example.org'--", "';DROP/**/TABLE/**/mailbox;--"))
    # The table is untouched.
    assert postfix[0].psql("SELECT count(*) FROM mailbox", database="postfix") == "2"


def test_a_stopped_database_is_sys_temp_and_recovers_without_a_restart(postie, postfix):
    database, conf = postfix
    metrics = free_port()
    server = serve(postie, conf, "--metrics", f"127.0.0.1:{metrics}")
    alice, (_, password) = "alice@example.org", USERS["alice@example.org"]
    assert b"hello alice" in first_message(server, alice, password)
    database.halt()
    three_logins_are_sys_temp(server, metrics, alice, password)
    server.wait_log(r"auth: Error: passdb sql\(.*dovecot-sql.conf.ext\): user=<alice@example.org>: cannot answer: .* no answer within 3 s", timeout=30)
    # Not counted as failed logins: no lockout after many more than the threshold would allow.
    assert "Locked out" not in server.log_text()
    database.resume()
    recovers(server, alice, password)
    assert server.alive()


def test_cache_a_changed_password_takes_effect_after_the_ttl_and_at_once_after_sighup(postie, postfix, doveadm):
    database, conf = postfix
    alice, (_, old) = "alice@example.org", USERS["alice@example.org"]
    # Hashed beforehand, so that each change is one quick UPDATE.
    hashes = {p: doveadm_hash(doveadm, "SHA512-CRYPT", p) for p in ("new one", "third")}

    def set_password(password: str) -> None:
        database.psql(f"UPDATE mailbox SET password = '{hashes[password]}' WHERE username = '{alice}'", database="postfix")

    short = serve(postie, conf, "--auth-cache-size", "1M", "--auth-cache-ttl", "4", "--auth-cache-negative-ttl", "4")
    assert b"hello alice" in first_message(short, alice, old)
    set_password("new one")
    # Cached: the old password still answers; the new one is checked against the database.
    assert b"hello alice" in first_message(short, alice, old)
    assert b"hello alice" in first_message(short, alice, "new one")
    time.sleep(5)  # past the 4 s TTL
    assert refusal(short, alice, old) == "-ERR [AUTH] Authentication failed."
    assert b"hello alice" in first_message(short, alice, "new one")

    # SIGHUP empties the cache: with an hour's TTL, a change counts only after it.
    long = serve(postie, conf, "--auth-cache-size", "10M")
    assert b"hello alice" in first_message(long, alice, "new one")
    set_password("third")
    assert b"hello alice" in first_message(long, alice, "new one")
    long.proc.send_signal(signal.SIGHUP)
    long.wait_log("SIGHUP: authentication cache flushed", timeout=30)
    assert refusal(long, alice, "new one") == "-ERR [AUTH] Authentication failed."
    assert b"hello alice" in first_message(long, alice, "third")


def test_config_check_connects_and_names_the_file_and_key(postie_bin, postfix, tmp_path):
    database, conf = postfix

    def check(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(postie_bin), "config", "check", "--listen", "127.0.0.1:1110", "--maildir", "~",
                               "--passdb", f"sql:{path}", "--database-connect-timeout", "3"],
                              capture_output=True, text=True, timeout=120)

    good = check(conf)
    assert good.returncode == 0, good.stderr
    assert f'passdb: ["sql:{conf}"]' in good.stdout

    broken = tmp_path / "broken.conf.ext"
    broken.write_text(conf.read_text().replace("SELECT username AS user, password,", "SELECT username AS user, passwd,"))
    r = check(broken)
    assert r.returncode == 1
    assert f"error: --passdb: sql({broken}): password_query:" in r.stderr and "passwd" in r.stderr, r.stderr

    sqlite = tmp_path / "sqlite.conf.ext"
    sqlite.write_text(conf.read_text().replace("driver = pgsql", "driver = sqlite"))
    r = check(sqlite)
    assert r.returncode == 1
    assert f"error: --passdb: {sqlite}: driver: 'sqlite' is not supported yet; pgsql (PostgreSQL) and mysql (MySQL/MariaDB) are" in r.stderr, r.stderr

    database.halt()
    r = check(conf)
    assert r.returncode == 1
    assert f"error: --passdb: sql({conf}): password_query on postgres://" in r.stderr and "no answer within 3 s" in r.stderr, r.stderr


def test_lmtp_delivers_to_sql_users_and_defers_while_the_database_is_down(postie, postfix):
    database, conf = postfix
    lmtp_port = free_port()
    server = serve(postie, conf, "--listen-lmtp", f"127.0.0.1:{lmtp_port}")
    wait_port(lmtp_port)
    message = b"From: a@example.net\r\nSubject: via lmtp\r\n\r\nbody\r\n"
    with smtplib.LMTP("127.0.0.1", lmtp_port, timeout=60) as c:
        c.ehlo("test")
        c.mail("a@example.net")
        assert c.rcpt("bob@example.org")[0] == 250
        code, reply = c.rcpt("nobody@example.org")
        assert code == 550, reply
        c.data(message)
    client = login(server, "bob@example.org", USERS["bob@example.org"][1])
    try:
        assert client.stat()[0] == 2
        assert any(b"via lmtp" in b"\r\n".join(client.retr(n)[1]) for n in (1, 2))
    finally:
        client.quit()
    database.halt()
    with smtplib.LMTP("127.0.0.1", lmtp_port, timeout=60) as c:
        c.ehlo("test")
        c.mail("a@example.net")
        code, reply = c.rcpt("bob@example.org")
        assert code == 451 and b"4.3.0" in reply, (code, reply)


def test_user_list_reads_the_passdbs(postie_bin, postfix, tmp_path):
    _, conf = postfix
    passwd = tmp_path / "passwd"
    passwd.write_text("carol@example.org:{PLAIN}x\nalice@example.org:{PLAIN}shadowed\n")
    r = subprocess.run([str(postie_bin), "user", "list", "--passdb", f"passwd-file:{passwd}", "--passdb", f"sql:{conf}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # In the chain's order; alice is listed once, from the first passdb that has her.
    assert r.stdout.splitlines() == ["carol@example.org\t{PLAIN}", "alice@example.org\t{PLAIN}", "bob@example.org\t{BLF-CRYPT}"]
    r = subprocess.run([str(postie_bin), "user", "list", "--passdb", "static:home=/x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 64 and "static is a userdb driver here" in r.stderr, r.stderr
