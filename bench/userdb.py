#!/usr/bin/env python3
"""Login throughput by user database: `postie bench` with 16 clients against the same Maildirs
with users in a passwd-file and in each other passdb/userdb driver, the auth cache on, in one
run (docs/users.md, "What a user database costs").

    bench/userdb                        # release build, every driver that can run here
    bench/userdb --drivers passwd-file,sql-pgsql --duration 20

Each driver gets the same N users (SHA512-CRYPT passwords made by `doveadm pw`) and Maildirs of
a few small messages; each session is USER/PASS, STAT, UIDL, RETR 1, QUIT, so the login is most
of its cost. The figure to compare is sessions/s beside the passwd-file's in the same run. Only
loopback is used. Prints figures; asserts nothing about them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "Tests" / "Interop"))

from kits import mysql, pg  # noqa: E402
from kits.ldap import Slapd  # noqa: E402
from kits.launcher import free_port, wait_port  # noqa: E402
from kits.mail import Maildir  # noqa: E402

DOMAIN = "example.org"


def log(message: str) -> None:
    print(f"[userdb] {message}", file=sys.stderr, flush=True)


def doveadm_hash(password: str) -> str:
    r = subprocess.run(["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password], capture_output=True, text=True, check=True)
    return r.stdout.strip()


class Setup:
    """The users, their Maildirs and the credentials file `postie bench` reads."""

    def __init__(self, root: Path, count: int):
        self.root = root
        self.vmail = root / "vmail"
        self.users: dict[str, tuple[str, str]] = {}
        lines = []
        for i in range(count):
            local = f"user{i:03d}"
            name = f"{local}@{DOMAIN}"
            password = f"Pw-{i:03d}-bench"
            self.users[name] = (password, doveadm_hash(password))
            md = Maildir(self.vmail / DOMAIN / local).create()
            for n in range(3):
                md.deliver(f"From: sender@example.net\r\nSubject: message {n}\r\n\r\n{'hello ' * 200}\r\n".encode())
            lines.append(f"{name}:{password}")
        self.credentials = root / "credentials"
        self.credentials.write_text("\n".join(lines) + "\n")
        self.maildir_template = str(self.vmail / "%d" / "%n")


def passwd_file(setup: Setup) -> tuple[list[str], callable]:
    path = setup.root / "passwd"
    path.write_text("".join(f"{name}:{stored}::::::\n" for name, (_, stored) in setup.users.items()))
    return ["--passdb", f"passwd-file:{path}", "--maildir", setup.maildir_template], lambda: None


SQL_CONF = """\
driver = pgsql
connect = host=127.0.0.1 port={port} dbname=postfix user={user} password={password}
default_pass_scheme = SHA512-CRYPT
password_query = SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active = '1'
user_query = SELECT '{vmail}/' || maildir AS home FROM mailbox WHERE username = '%u' AND active = '1'
iterate_query = SELECT username AS user FROM mailbox
"""


def sql_pgsql(setup: Setup) -> tuple[list[str], callable]:
    server = pg.start()
    server.create_database("postfix")
    server.psql("CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, password varchar(255) NOT NULL, "
                "maildir varchar(255) NOT NULL, active boolean NOT NULL DEFAULT true)", database="postfix")
    values = ",".join(f"('{name}', '{stored}', '{DOMAIN}/{name.split('@')[0]}')" for name, (_, stored) in setup.users.items())
    server.psql(f"INSERT INTO mailbox (username, password, maildir) VALUES {values}", database="postfix")
    conf = setup.root / "dovecot-sql.conf.ext"
    conf.write_text(SQL_CONF.format(port=server.port, user=pg.SUPERUSER, password=server.password, vmail=setup.vmail))
    conf.chmod(0o600)
    return ["--passdb", f"sql:{conf}", "--userdb", f"sql:{conf}", "--maildir", "~"], server.stop


LDAP_SUFFIX = "dc=example,dc=org"
LDAP_CONF = """\
uris = {uri}
dn = cn=admin,{suffix}
dnpass = {root_password}
base = ou=people,{suffix}
auth_bind = {auth_bind}
pass_filter = (&(objectClass=inetOrgPerson)(mail=%u))
pass_attrs = mail=user, userPassword=password
user_filter = (&(objectClass=inetOrgPerson)(mail=%u))
user_attrs = =home={vmail}/%d/%n
iterate_filter = (objectClass=inetOrgPerson)
iterate_attrs = mail=user
"""


def ldap(setup: Setup, auth_bind: bool) -> tuple[list[str], callable]:
    """OpenLDAP's slapd (kits/ldap.py) with inetOrgPerson entries; the doveadm SHA512-CRYPT
    hashes as {CRYPT}, which both slapd (auth_bind) and Postie (lookup) check."""
    server = Slapd(setup.root / ("slapd-bind" if auth_bind else "slapd-lookup"), LDAP_SUFFIX).start()
    entries = [f"dn: {LDAP_SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
               f"dn: ou=people,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: people\n"]
    for name, (_, stored) in setup.users.items():
        local = name.split("@")[0]
        entries.append(f"dn: uid={local},ou=people,{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\nuid: {local}\ncn: {local}\n"
                       f"sn: {local}\nmail: {name}\nuserPassword: {stored.replace('{SHA512-CRYPT}', '{CRYPT}')}\n")
    server.add("\n".join(entries))
    conf = setup.root / f"dovecot-ldap-{'bind' if auth_bind else 'lookup'}.conf.ext"
    conf.write_text(LDAP_CONF.format(uri=server.uri, suffix=LDAP_SUFFIX, root_password=server.root_password,
                                     auth_bind="yes" if auth_bind else "no", vmail=setup.vmail))
    conf.chmod(0o600)
    return ["--passdb", f"ldap:{conf}", "--userdb", f"ldap:{conf}", "--maildir", "~"], server.stop


def sql_mysql(setup: Setup) -> tuple[list[str], callable]:
    """Debian's MariaDB (kits/mysql.py) with the same table and queries, driver = mysql."""
    server = mysql.start()
    server.sql("CREATE DATABASE postfix")
    server.sql("CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, password varchar(255) NOT NULL, "
               "maildir varchar(255) NOT NULL, active tinyint(1) NOT NULL DEFAULT 1)", database="postfix")
    values = ",".join(f"('{name}', '{stored}', '{DOMAIN}/{name.split('@')[0]}')" for name, (_, stored) in setup.users.items())
    server.sql(f"INSERT INTO mailbox (username, password, maildir) VALUES {values}", database="postfix")
    secret = "bench-" + os.urandom(6).hex()
    server.create_user("postfix", secret, "SELECT ON postfix.*")
    conf = setup.root / "dovecot-sql-mysql.conf.ext"
    conf.write_text(SQL_CONF.replace("driver = pgsql", "driver = mysql").replace("'{vmail}/' || maildir", "CONCAT('{vmail}/', maildir)")
                    .format(port=server.port, user="postfix", password=secret, vmail=setup.vmail))
    conf.chmod(0o600)
    return ["--passdb", f"sql:{conf}", "--userdb", f"sql:{conf}", "--maildir", "~"], server.stop


DRIVERS = {
    "passwd-file": passwd_file,
    "sql-pgsql": sql_pgsql,
    "sql-mysql": sql_mysql,
    "ldap-lookup": lambda setup: ldap(setup, auth_bind=False),
    "ldap-auth-bind": lambda setup: ldap(setup, auth_bind=True),
}


def serve(postie: Path, root: Path, name: str, args: list[str], cache: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    extra = ["--auth-cache-size", "10M"] if cache else []
    cmd = [str(postie), "serve", "--listen", f"127.0.0.1:{port}", "--trusted-network", "127.0.0.0/8",
           "--control-socket", str(root / f"{name}.sock"), "--max-connections", "1000", *args, *extra]
    logfile = open(root / f"{name}.log", "wb")
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, cwd=root)
    wait_port(port, timeout=60)
    return proc, port


def bench(postie: Path, port: int, credentials: Path, clients: int, duration: float) -> dict:
    r = subprocess.run([str(postie), "bench", "--server", f"127.0.0.1:{port}", "--credentials", str(credentials),
                        "--clients", str(clients), "--duration", str(duration), "--retr", "1", "--json"],
                       capture_output=True, text=True, timeout=duration + 120)
    if r.returncode != 0:
        raise SystemExit(f"postie bench failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postie", type=Path, default=REPO / ".build" / "release" / "postie")
    parser.add_argument("--drivers", default=",".join(DRIVERS))
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=15)
    args = parser.parse_args()
    args.postie = args.postie.resolve()
    drivers = args.drivers.split(",")
    unknown = [d for d in drivers if d not in DRIVERS]
    if unknown:
        raise SystemExit(f"unknown drivers {unknown}; known: {', '.join(DRIVERS)}")
    root = Path(tempfile.mkdtemp(prefix="postie-userdb-bench-"))
    os.chmod(root, 0o755)
    results = []
    try:
        setup = Setup(root, args.users)
        log(f"{args.users} users, {args.clients} clients, {args.duration:g} s per run, {args.postie}")
        for driver in drivers:
            serve_args, cleanup = DRIVERS[driver](setup)
            try:
                for cache in ([False, True] if driver == "passwd-file" else [True]):
                    label = f"{driver}{' + cache' if cache else ''}"
                    proc, port = serve(args.postie, root, label.replace(" + ", "-"), serve_args, cache)
                    try:
                        bench(args.postie, port, setup.credentials, args.clients, 3)  # warm up (and fill the cache)
                        report = bench(args.postie, port, setup.credentials, args.clients, args.duration)
                    finally:
                        proc.terminate()
                        proc.wait(timeout=30)
                    results.append((label, report))
                    log(f"{label}: {report.get('sessions_per_second', 0):.0f} sessions/s")
            finally:
                cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = next((r for label, r in results if label == "passwd-file"), None)
    print(f"{'user database':<24} {'sessions/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'vs passwd-file':>15}")
    for label, r in results:
        rate = r.get("sessions_per_second", 0)
        latency = r.get("session_latency_ms", {})
        ratio = f"{rate / base['sessions_per_second']:.2f}x" if base and base.get("sessions_per_second") else "-"
        print(f"{label:<24} {rate:>10.0f} {latency.get('p50', 0):>8.1f} {latency.get('p99', 0):>8.1f} "
              f"{r.get('failed_sessions', 0):>7} {ratio:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
