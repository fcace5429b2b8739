"""`--passdb sql:FILE --userdb sql:FILE` with `driver = mysql` on a PostfixAdmin `mailbox` table
in a real MariaDB (Debian's mariadb-server, started by the test on loopback), with a
dovecot-sql.conf.ext as PostfixAdmin's Dovecot instructions write it (docs/users.md):
{SHA512-CRYPT} and {BLF-CRYPT} passwords made by `doveadm pw`, the right Maildir per user,
hostile names that find no one, a stopped or hung database that is [SYS/TEMP] and recovers
without a restart, `config check` naming the file and key, `user list`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kits import mysql
from kits.launcher import free_port
from kits.report import note
from kits.mail import Maildir
from kits.sqlusers import USERS, doveadm_hash, first_message, logs_users_in_and_refuses_hostile_names, recovers, refusal, serve, three_logins_are_sys_temp


# PostfixAdmin's MySQL schema (the columns Dovecot's queries read; the rest as PostfixAdmin has them).
SCHEMA = """
CREATE TABLE mailbox (
  username varchar(255) NOT NULL, password varchar(255) NOT NULL, name varchar(255) NOT NULL DEFAULT '',
  maildir varchar(255) NOT NULL DEFAULT '', quota bigint(20) NOT NULL DEFAULT 0, local_part varchar(255) NOT NULL,
  domain varchar(255) NOT NULL, created datetime NOT NULL DEFAULT '2000-01-01 00:00:00',
  modified datetime NOT NULL DEFAULT '2000-01-01 00:00:00', active tinyint(1) NOT NULL DEFAULT 1,
  PRIMARY KEY (username), KEY domain (domain)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='Postfix Admin - Virtual Mailboxes'
"""

# As PostfixAdmin's DOVECOT.txt writes it for MySQL, with its /var/mail/vmail moved under the
# test's directory (and its quota as Dovecot 2.3's quota_rule).
SQL_CONF = """\
# dovecot-sql.conf.ext, MySQL (PostfixAdmin DOVECOT.txt)
connect = host=127.0.0.1 port={port} dbname=postfix user=postfix password={password} connect_timeout=3
driver = mysql
default_pass_scheme = SHA512-CRYPT

# Get the mailbox
user_query = SELECT '{vmail}/%u' AS home, 'maildir:{vmail}/%u' AS mail, 1001 AS uid, 1001 AS gid, \\
  CONCAT('*:bytes=', quota) AS quota_rule FROM mailbox WHERE username = '%u' AND active = '1'
# Get the password
password_query = SELECT username AS user, password, '{vmail}/%u' AS userdb_home, 'maildir:{vmail}/%u' AS userdb_mail, \\
  1001 AS userdb_uid, 1001 AS userdb_gid FROM mailbox WHERE username = '%u' AND active = '1'
iterate_query = SELECT username AS user FROM mailbox
"""


@pytest.fixture
def postfix(tmp_path, doveadm):
    """A MariaDB of its own (this test stops it), holding PostfixAdmin's table, read by a
    `postfix` user with SELECT only and a password holding ' and \\."""
    server = mysql.start()  # under /tmp: the mysql user cannot enter pytest's 0700 directories
    try:
        server.sql("CREATE DATABASE postfix CHARACTER SET utf8mb4")
        server.sql(SCHEMA, database="postfix")
        password = mysql.password()
        server.create_user("postfix", password, grant="SELECT ON postfix.*")
        vmail = tmp_path / "vmail"
        for user, (scheme, secret) in USERS.items():
            local, domain = user.split("@")
            stored = doveadm_hash(doveadm, scheme, secret)
            assert stored.startswith("{" + scheme + "}"), stored
            server.sql(f"INSERT INTO mailbox (username, password, maildir, quota, local_part, domain) "
                       f"VALUES ('{user}', '{stored}', '{domain}/{local}/', 10485760, '{local}', '{domain}')", database="postfix")
            Maildir(vmail / user).create().deliver(f"Subject: for {user}\r\n\r\nhello {local}\r\n".encode())
        conf = tmp_path / "dovecot-sql.conf.ext"
        conf.write_text(SQL_CONF.format(port=server.port, password=password, vmail=vmail))
        conf.chmod(0o600)
        yield server, conf
    finally:
        server.stop()


def test_postfixadmin_table_logs_users_in_to_their_maildirs(postie, postfix):
    database, conf = postfix
    server = serve(postie, conf)
    # (USER takes no spaces; the unit tests try names with spaces through a table in memory.)
    logs_users_in_and_refuses_hostile_names(
        server, ("x'OR'1'='1", "alice@example.org'#", "';DROP/**/TABLE/**/mailbox;--", "x\\'OR/**/1=1#", "%u", "?"))
    # The table is untouched.
    assert database.sql("SELECT count(*) FROM mailbox", database="postfix") == "2"
    # Still serving, on the same pooled connections.
    assert b"hello alice" in first_message(server, "alice@example.org", USERS["alice@example.org"][1])
    assert server.alive()


def test_a_stopped_database_is_sys_temp_and_recovers_without_a_restart(postie, postfix):
    database, conf = postfix
    metrics = free_port()
    server = serve(postie, conf, "--metrics", f"127.0.0.1:{metrics}")
    alice, (_, password) = "alice@example.org", USERS["alice@example.org"]
    assert b"hello alice" in first_message(server, alice, password)
    database.halt()
    three_logins_are_sys_temp(server, metrics, alice, password)
    server.wait_log(r"auth: Error: passdb sql\(.*dovecot-sql.conf.ext\): user=<alice@example.org>: cannot answer: "
                    r"sql\(.*\): password_query on mysql://postfix@127\.0\.0\.1:\d+/postfix: ", timeout=30)
    # Not counted as failed logins, and the password never reaches the log.
    assert "Locked out" not in server.log_text()
    assert conf.read_text().split("password=")[1].split()[0] not in server.log_text()
    database.resume()
    recovers(server, alice, password)
    assert server.alive()


def test_a_hung_database_is_sys_temp_within_the_connect_timeout_and_recovers(postie, postfix):
    database, conf = postfix
    server = serve(postie, conf)
    alice, (_, password) = "alice@example.org", USERS["alice@example.org"]
    bob, (_, bobs) = "bob@example.org", USERS["bob@example.org"]
    assert b"hello alice" in first_message(server, alice, password)
    database.freeze()  # SIGSTOP: connections open, nothing answers
    try:
        assert refusal(server, alice, password) == "-ERR [SYS/TEMP] Temporary server failure, try again later."
        assert refusal(server, bob, bobs) == "-ERR [SYS/TEMP] Temporary server failure, try again later."
        server.wait_log(r"cannot answer: .*mysql://postfix@127\.0\.0\.1:\d+/postfix: no answer within 3 s", timeout=30)
    finally:
        database.thaw()
    recovers(server, alice, password)
    recovers(server, bob, bobs)


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
    assert f"error: --passdb: sql({broken}): password_query: Unknown column 'passwd'" in r.stderr, r.stderr

    wrong = tmp_path / "wrong.conf.ext"
    wrong.write_text(conf.read_text().replace("user=postfix password=", "user=postfix password=not"))
    r = check(wrong)
    assert r.returncode == 1
    assert f"error: --passdb: sql({wrong}): password_query on mysql://postfix@127.0.0.1:{database.port}/postfix: Access denied" in r.stderr, r.stderr

    unknown = tmp_path / "unknown.conf.ext"
    unknown.write_text(conf.read_text().replace("connect_timeout=3", "sslmode=require"))
    r = check(unknown)
    assert r.returncode == 1
    assert f"error: --passdb: {unknown}: connect: unknown key 'sslmode'" in r.stderr, r.stderr

    database.halt()
    r = check(conf)
    assert r.returncode == 1
    assert f"error: --passdb: sql({conf}): password_query on mysql://postfix@127.0.0.1:{database.port}/postfix: " in r.stderr, r.stderr


def test_user_list_reads_the_iterate_query(postie_bin, postfix, tmp_path):
    _, conf = postfix
    passwd = tmp_path / "passwd"
    passwd.write_text("carol@example.org:{PLAIN}x\nalice@example.org:{PLAIN}shadowed\n")
    r = subprocess.run([str(postie_bin), "user", "list", "--passdb", f"passwd-file:{passwd}", "--passdb", f"sql:{conf}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # In the chain's order; alice is listed once, from the first passdb that has her.
    assert r.stdout.splitlines() == ["carol@example.org\t{PLAIN}", "alice@example.org\t{PLAIN}", "bob@example.org\t{BLF-CRYPT}"]


def test_bench_16_clients_mysql_with_the_auth_cache_and_a_passwd_file(postie, postie_bin, postfix, doveadm, tmp_path):
    """`postie bench` with 16 clients: the MariaDB set-up without and with the auth cache, and
    the same users in a passwd-file. Figures are printed (docs/users.md), never asserted."""
    database, conf = postfix
    users = [f"load{i}@example.org" for i in range(16)]
    password = "pw-load"
    stored = doveadm_hash(doveadm, "SHA512-CRYPT", password)
    vmail = tmp_path / "vmail"
    lines = []
    for user in users:
        local, domain = user.split("@")
        database.sql(f"INSERT INTO mailbox (username, password, maildir, local_part, domain) "
                     f"VALUES ('{user}', '{stored}', '{domain}/{local}/', '{local}', '{domain}')", database="postfix")
        Maildir(vmail / user).create().deliver(f"Subject: load\r\n\r\n{'x' * 8000}\r\n".encode())
        lines.append(f"{user}:{stored}::::{vmail / user}::\n")
    passwd = tmp_path / "passwd"
    passwd.write_text("".join(lines))
    credentials = tmp_path / "credentials"
    credentials.write_text("".join(f"{user}:{password}\n" for user in users))

    def bench(server) -> dict:
        r = subprocess.run([str(postie_bin), "bench", "--server", f"{server.host}:{server.port}", "--credentials", str(credentials),
                            "--clients", "16", "--duration", "6", "--ramp-up", "1", "--retr", "1", "--json"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["sessions"] > 0 and doc["failed_sessions"] == 0 and doc["errors"] == {}, doc
        return doc

    figures = {}
    for label, server in (
        ("passwd-file", lambda: postie.start(passwd=passwd, maildir="~", extra=["--auth-failure-delay", "0"])),
        ("passwd-file, --auth-cache-size 10M", lambda: postie.start(passwd=None, maildir="~", extra=[
            "--passdb", f"passwd-file:{passwd}", "--auth-cache-size", "10M", "--auth-failure-delay", "0"])),
        ("mysql, no cache", lambda: serve(postie, conf)),
        ("mysql, --auth-cache-size 10M", lambda: serve(postie, conf, "--auth-cache-size", "10M")),
    ):
        running = server()
        doc = bench(running)
        running.stop()
        login = next(s for s in doc["steps"] if s["step"] == "login")["latency_ms"]
        figures[label] = doc["sessions_per_second_after_ramp_up"]
        note(f"bench 16 clients, {label}: {doc['sessions_per_second_after_ramp_up']:.0f} sessions/s, "
             f"login p50 {login['p50']:.1f} ms p99 {login['p99']:.1f} ms, session p99 {doc['session_latency_ms']['p99']:.1f} ms")
    cached = figures["mysql, --auth-cache-size 10M"]
    note(f"bench 16 clients: mysql with the cache at {100 * cached / figures['passwd-file']:.0f} % of the passwd-file figure, "
         f"{100 * cached / figures['passwd-file, --auth-cache-size 10M']:.0f} % of the cached passwd-file's")
