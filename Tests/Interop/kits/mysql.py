"""A throwaway MariaDB server for the tests: Debian's `mariadb-server`, a fresh data directory
under /tmp (never the system instance), listening on 127.0.0.1 and a free port and on a Unix
socket of its own, with a real user and password for the server under test.

Standard library only. As root the server runs as the `mysql` user (the package's). Used by
test_userdb_mysql.py:

    server = mysql.start()
    server.sql("CREATE DATABASE postfix")
    server.create_user("postfix", "secret", grant="SELECT ON postfix.*")
    ...
    server.halt(); server.resume()     # an outage and the return
    server.freeze(); server.thaw()     # a server that accepts and never answers
    server.stop()
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def _tool(name: str) -> str:
    for found in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if found and os.access(found, os.X_OK):
            return found
    raise FileNotFoundError(f"{name} is missing (scripts/test installs Debian's mariadb-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MariaDBServer:
    directory: Path
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def socket_path(self) -> Path:
        return self.directory / "mysqld.sock"

    @property
    def log_path(self) -> Path:
        return self.directory / "mariadb.log"

    def _command(self) -> list[str]:
        user = ["--user=mysql"] if os.geteuid() == 0 else []
        return [_tool("mariadbd"), "--no-defaults", f"--datadir={self.directory / 'data'}", f"--socket={self.socket_path}",
                f"--port={self.port}", f"--bind-address={self.host}", f"--pid-file={self.directory / 'mariadb.pid'}",
                f"--log-error={self.log_path}", "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=8M", "--innodb-flush-log-at-trx-commit=0", "--max-connections=200", *user]

    def _launch(self) -> None:
        self.proc = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.proc.returncode}:\n{self.log_tail()}")
            r = subprocess.run(self._client() + ["-e", "SELECT 1"], capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                # Also on TCP, as the server under test connects.
                try:
                    with socket.create_connection((self.host, self.port), timeout=1):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd did not answer within 60 s: {r.stderr}\n{self.log_tail()}")
            time.sleep(0.2)

    def _client(self, database: str | None = None) -> list[str]:
        return [_tool("mariadb"), "--no-defaults", f"--socket={self.socket_path}", "-uroot", "-N", "-B"] + (
            [database] if database else [])

    def sql(self, statement: str, database: str | None = None, check: bool = True) -> str:
        """Runs SQL as root over the Unix socket; returns the output (tab-separated, no header)."""
        r = subprocess.run(self._client(database) + ["-e", statement], capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"mariadb failed ({r.returncode}): {statement}\n{r.stderr}")
        return r.stdout.strip()

    def create_user(self, name: str, password: str, grant: str) -> None:
        """A user who logs in with a password over TCP (`grant`: e.g. `SELECT ON postfix.*`)."""
        quoted = password.replace("\\", "\\\\").replace("'", "''")
        self.sql(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{quoted}'; GRANT {grant} TO '{name}'@'%'")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def halt(self) -> None:
        """Stops the server and keeps its data, as an outage would (`resume` brings it back)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def resume(self) -> None:
        """Starts a halted server again on the same port; returns once it accepts logins."""
        self._launch()

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections and nothing answers (a hung database)."""
        assert self.proc
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.directory, ignore_errors=True)


def start(directory: Path | None = None, port: int | None = None) -> MariaDBServer:
    """mariadb-install-db + mariadbd in a fresh directory; returns once the server answers.
    root logs in without a password over the Unix socket only (normal authentication)."""
    directory = Path(directory or tempfile.mkdtemp(prefix="postie-mariadb-"))
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    user = []
    if os.geteuid() == 0:
        mysql = pwd.getpwnam("mysql")
        os.chown(directory, mysql.pw_uid, mysql.pw_gid)
        user = ["--user=mysql"]
    os.chmod(directory, 0o700)
    r = subprocess.run([_tool("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", "--skip-name-resolve", *user],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {r.stdout}\n{r.stderr}")
    server = MariaDBServer(directory, port or free_port())
    server._launch()
    return server


def password() -> str:
    """A password with characters a careless driver would mangle."""
    return "pw'" + secrets.token_hex(6) + "\\x"
