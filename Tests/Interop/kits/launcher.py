"""The suite's one server launcher: `postie serve` on loopback.

`ServerFactory` (the `postie` fixture) builds the command line (listeners, passwd-file,
Maildir template, extra flags), gives each server its own log and a name, and stops every
server at the end of the test; `PostieServer` starts the process, waits until every
listener accepts connections, reads and waits for its log, and stops or kills it.

Standard library only.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free a moment ago on `host`, never one this process handed out before: two calls in a row
    can otherwise get the same port back from the kernel (a server with two listeners then fails)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def listen_spec(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerError(AssertionError):
    pass


class ServedBy:
    """`host` and `port` of the `server` a test environment runs, and `restart` through its
    `factory` (a ServerFactory)."""

    def restart(self, same_port: bool = False, **kw) -> "PostieServer":
        """Starts a new server process with the same settings (the old one must be stopped).

        A fresh port by default, so that TIME_WAIT on the old one can never matter;
        test_protocol checks restarting on the same port separately."""
        self.server = self.factory.restart(self.server, same_port, **kw)
        return self.server

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port


class PostieServer:
    """`postie serve` as a subprocess with stderr to a log file."""

    def __init__(self, binary: Path, args: list[str], log_path: Path, listens: list[tuple[str, int]],
                 cwd: Path, env: dict | None = None, name: str = "postie", preexec_fn=None):
        self.binary = binary
        self.args = args
        self.log_path = log_path
        self.listens = listens
        self.cwd = cwd
        self.env = env
        self.preexec_fn = preexec_fn  # run in the child before exec (prctl and the like)
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.stdout_path = log_path.with_suffix(".stdout")
        self.notes: list[str] = []
        self.settings: dict = {}  # what ServerFactory.make was given, for restart

    @property
    def host(self) -> str:
        return self.listens[0][0]

    @property
    def port(self) -> int:
        return self.listens[0][1]

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    def start(self, ready_timeout: float = 30.0) -> "PostieServer":
        self.log_f = open(self.log_path, "ab")
        self.out_f = open(self.stdout_path, "ab")
        self.log_f.write(f"=== {self.name}: {' '.join(map(str, [self.binary] + self.args))}\n".encode())
        self.log_f.flush()
        self.proc = subprocess.Popen(
            [str(self.binary)] + self.args,
            stdin=subprocess.DEVNULL,
            stdout=self.out_f,
            stderr=self.log_f,
            cwd=self.cwd,
            env=self.env,
            preexec_fn=self.preexec_fn,
        )
        self.started_at = time.monotonic()
        for host, port in self.listens:
            self.wait_ready(host, port, ready_timeout)
        return self

    def wait_ready(self, host: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with status {self.proc.returncode} before listening on "
                    f"{host}:{port}; log tail:\n{self.log_tail()}")
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError as e:
                last = e
                time.sleep(0.05)
        raise ServerError(f"{self.name} did not accept connections on {host}:{port} within {timeout}s "
                          f"(last error {last}); log tail:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.notes.append(f"{self.name} ignored SIGTERM for {timeout}s; sent SIGKILL")
                self.proc.kill()
                self.proc.wait(10)
        self._close_files()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL now (fault injection) and reap."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait(10)
        self._close_files()

    def _close_files(self) -> None:
        for f in (getattr(self, "log_f", None), getattr(self, "out_f", None)):
            if f and not f.closed:
                f.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """What the process itself wrote to stdout and stderr (without the launcher's `===` lines)."""
        log = "".join(l for l in self.log_text().splitlines(keepends=True) if not l.startswith("=== "))
        return self.stdout_text() + log

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def log_lines(self, pattern: str) -> list[str]:
        """The log lines matching `pattern` (a regex)."""
        rx = re.compile(pattern)
        return [l for l in self.log_text().splitlines() if rx.search(l)]

    def wait_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
        """Waits until `count` log lines match `pattern` (a regex); returns the matching lines."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.log_lines(pattern)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"log of {self.name}: {count} line(s) matching {pattern!r} not seen within "
                                     f"{timeout}s (saw {len(found)}); tail:\n{self.log_tail(30)}")
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}; tail:\n{self.log_tail(30)}")
            time.sleep(0.05)


def wait_port(port: int, host: str = HOST, timeout: float = 10.0) -> None:
    """Waits until something accepts connections on host:port (a listener that is bound
    just after the one `PostieServer.start` waited for: LMTP, metrics)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ServerFactory:
    """Makes `postie serve` processes for one test (the `postie` fixture); `stop_all` at teardown."""

    def __init__(self, binary: Path, workdir: Path, node, note=print):
        self.binary = binary
        self.workdir = workdir
        self.node = node
        self.note = note
        self.servers: list[PostieServer] = []
        if not hasattr(node, "_postie_servers"):
            node._postie_servers = []

    def make(self, *, passwd: Path | None, maildir: str | None, listen: list[tuple[str, int]] | None = None,
             extra: list[str] | None = None, name: str | None = None, preexec_fn=None) -> PostieServer:
        listen = listen or [(HOST, free_port())]
        args = ["serve"]
        for host, p in listen:
            args += ["--listen", listen_spec(host, p)]
        if passwd is not None:
            args += ["--passwd-file", str(passwd)]
        if maildir is not None:
            args += ["--maildir", maildir]
        args += extra or []
        name = name or f"postie{len(self.servers) + 1}"
        if "--control-socket" not in args:
            # Each server its own control socket (root's default, /run/postie/control.sock, is
            # one per machine), under /tmp: a Unix socket path has at most 107 bytes.
            self._socket_dir = getattr(self, "_socket_dir", None) or tempfile.mkdtemp(prefix="postie-ctl-")
            args += ["--control-socket", os.path.join(self._socket_dir, f"{name}.sock")]
        env = dict(os.environ)
        env["HOME"] = str(self.workdir)
        env["TMPDIR"] = str(self.workdir)
        s = PostieServer(self.binary, args, self.workdir / f"{name}.log", listen, cwd=self.workdir, env=env, name=name,
                         preexec_fn=preexec_fn)
        s.settings = {"passwd": passwd, "maildir": maildir, "extra": extra}
        self.servers.append(s)
        self.node._postie_servers.append(s)
        return s

    def start(self, **kw) -> PostieServer:
        ready = kw.pop("ready_timeout", 30.0)
        return self.make(**kw).start(ready_timeout=ready)

    def restart(self, old: PostieServer, same_port: bool = False, **kw) -> PostieServer:
        """Starts a server with `old`'s settings (overridden by `kw`) on its port or a fresh one."""
        listen = old.listens if same_port else [(old.host, free_port(old.host))]
        return self.start(**{**old.settings, "listen": listen, **kw})

    def stop_all(self) -> None:
        for s in self.servers:
            s.stop()
            for n in s.notes:
                self.note(f"{self.node.nodeid}: {n}")
        if getattr(self, "_socket_dir", None):
            shutil.rmtree(self._socket_dir, ignore_errors=True)


def control_socket(server) -> str:
    """The control socket the launcher gave `server` (`postie admin --control-socket`)."""
    return server.args[server.args.index("--control-socket") + 1]


def admin(postie_bin, server_or_path, *args: str) -> subprocess.CompletedProcess:
    """`postie admin ARGS` against a launched server (or a socket path)."""
    path = server_or_path if isinstance(server_or_path, str) else control_socket(server_or_path)
    return subprocess.run([str(postie_bin), "admin", *args, "--control-socket", path],
                          capture_output=True, text=True, timeout=30)


# A lockout that a test reaches in three failed logins, with delays too short to slow it.
LOCKOUT_CONFIG = """\
auth_failure_delay: 0.01
auth_failure_max_delay: 0.02
lockout_threshold: 3
lockout_window: 300
lockout_duration: 600
"""
