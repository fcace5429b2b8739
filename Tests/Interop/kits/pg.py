"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` package, a fresh
data directory under /tmp, listening on 127.0.0.1 and a free port, password (SCRAM) auth.

Standard library only.  As root the server runs as the `postgres` user (PostgreSQL refuses
to run as root).  Used by conftest.py (a session-scoped server and a database per test) and
by scripts/test, which starts one for the Swift tests:

    eval "$(python3 Tests/Interop/kits/pg.py start /tmp/postie-pg)"   # exports POSTIE_TEST_DATABASE_URL
    python3 Tests/Interop/kits/pg.py stop /tmp/postie-pg
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postie_test"


def pg_bindir() -> Path:
    """The newest installed server's bin directory; raises if there is none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise FileNotFoundError("no PostgreSQL server: /usr/lib/postgresql/*/bin/initdb is missing "
                                "(scripts/test installs Debian's postgresql package)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


@dataclass
class PostgresServer:
    directory: Path
    port: int
    password: str
    host: str = "127.0.0.1"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        return f"postgres://{user}:{password or self.password}@{self.host}:{self.port}/{database}?sslmode=disable"

    def psql(self, sql: str, database: str = "postgres", check: bool = True, stdin_path: Path | None = None) -> str:
        """Runs SQL with psql (unaligned, tuples only) and returns its output; `stdin_path`
        feeds a COPY ... FROM STDIN."""
        env = dict(os.environ, PGPASSWORD=self.password)
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        try:
            r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.host, "-p", str(self.port),
                                "-U", SUPERUSER, "-d", database, "-c", sql],
                               env=env, stdin=stdin, capture_output=False, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=600)
        finally:
            if stdin_path:
                stdin.close()
        if check and r.returncode != 0:
            raise AssertionError(f"psql failed ({r.returncode}): {sql}\n{r.stderr}")
        return r.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def halt(self) -> None:
        """Stops the server and keeps its data, as an outage would (`resume` brings it back).
        A CHECKPOINT first: the test cluster runs with synchronous_commit and fsync off, so an
        immediate stop could otherwise lose rows committed moments before (a production
        server's committed rows survive an outage; the tests' must too)."""
        self.psql("CHECKPOINT", check=False)
        subprocess.run(_as_postgres([str(pg_bindir() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60, check=True)

    def resume(self) -> None:
        """Starts a halted server again on the same port; returns once it accepts logins."""
        subprocess.run(_as_postgres([str(pg_bindir() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60",
                                     "start"]), capture_output=True, timeout=120, check=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.psql("SELECT 1")
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        bindir = pg_bindir()
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.directory, ignore_errors=True)


def start(directory: Path | None = None, port: int | None = None, max_connections: int = 200) -> PostgresServer:
    """initdb + pg_ctl start in a fresh directory; returns once the server accepts logins."""
    bindir = pg_bindir()
    if shutil.which("psql") is None:
        raise FileNotFoundError("psql is missing (Debian's postgresql-client)")
    directory = Path(directory or tempfile.mkdtemp(prefix="postie-pg-"))
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    port = port or free_port()
    pwfile = directory / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        for p in (directory, pwfile):
            os.chown(p, pg.pw_uid, pg.pw_gid)
    os.chmod(directory, 0o700)
    data = directory / "data"
    r = subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--pwfile", str(pwfile),
                                     "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync",
                                     "--locale=C"]),
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"initdb failed: {r.stdout}\n{r.stderr}")
    conf = data / "postgresql.conf"
    with open(conf, "a") as f:
        f.write(f"""
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{directory}'
max_connections = {max_connections}
# A test server: speed over crash safety (nothing here survives the run anyway).
fsync = off
full_page_writes = off
synchronous_commit = off
shared_buffers = 64MB
log_min_messages = warning
# What docs/postgres.md asks of production servers, so that a dead node's locks go in bounded time.
tcp_keepalives_idle = 30
tcp_keepalives_interval = 10
tcp_keepalives_count = 3
tcp_user_timeout = 60000
""")
    log = directory / "postgres.log"
    if os.geteuid() == 0:
        log.touch()
        pg = pwd.getpwnam("postgres")
        os.chown(log, pg.pw_uid, pg.pw_gid)
    r = subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]),
                       capture_output=True, text=True, timeout=120)
    server = PostgresServer(directory, port, password)
    if r.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {r.stdout}\n{r.stderr}\n{server.log_tail()}")
    deadline = time.monotonic() + 30
    while True:
        try:
            server.psql("SELECT 1")
            return server
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(f"usage: {argv[0]} start|stop DIR", file=sys.stderr)
        return 2
    directory = Path(argv[2])
    state = Path(str(directory) + ".state")
    if argv[1] == "start":
        if directory.exists():
            shutil.rmtree(directory)
        server = start(directory)
        state.write_text(f"{server.port} {server.password}\n")
        print(f"export POSTIE_TEST_DATABASE_URL='{server.url()}'")
        return 0
    port, password = state.read_text().split()
    PostgresServer(directory, int(port), password).stop()
    state.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
