"""Real client tools the suite drives: curl, fetchmail and `doveadm pw`, and `need`/`run` for
any other command line tool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def need(tool: str) -> str:
    """The path of a required tool; a failure, never a skip, when it is missing."""
    p = shutil.which(tool)
    if p is None:
        pytest.fail(f"{tool} is missing (Debian: {'prometheus' if tool == 'promtool' else 'systemd'}); "
                    f"scripts/test installs it", pytrace=False)
    return p


def run(cmd: list, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """A command with its output captured as text."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def run_postie(postie_bin, args: list[str], stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """The binary under test with `stdin` (UTF-8) fed in; output captured as bytes."""
    return subprocess.run([str(postie_bin)] + args, input=None if stdin is None else stdin.encode("utf-8"),
                          capture_output=True, timeout=timeout)


def curl(args: list, timeout: float = 60) -> subprocess.CompletedProcess:
    """`curl -sS` with a time limit; stdout and stderr captured as bytes."""
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout))] + [str(a) for a in args],
                          capture_output=True, timeout=timeout + 10)


def doveadm_pw_test(doveadm: str, stored: str, password: str) -> subprocess.CompletedProcess:
    """`doveadm pw -t`: exit status 0 when the password matches the stored hash."""
    return subprocess.run([doveadm, "pw", "-t", stored, "-p", password], capture_output=True, timeout=60)


# An MDA for fetchmail: each message into its own numbered file, streamed.
MDA = textwrap.dedent(
    """\
    import os, sys
    out = sys.argv[1]
    n = 0
    while True:
        n += 1
        try:
            fd = os.open(os.path.join(out, "%05d.eml" % n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            continue
    with os.fdopen(fd, "wb") as f:
        while True:
            b = sys.stdin.buffer.read(1 << 20)
            if not b:
                break
            f.write(b)
    """
)

KEEP = ["keep", "no rewrite", "no mimedecode"]


class Fetchmail:
    """fetchmail polling one POP3 account in `directory` (its rc file, .fetchids and logs),
    handing each message to an MDA that writes it to a file of its own in `out`.

    `options`: the lines of the poll's user entry before the `mda` line."""

    def __init__(self, directory: Path, port: int, user: str, password: str, *, poll: str = "127.0.0.1",
                 timeout: int = 60, options: list[str] | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True)
        self.out = self.dir / "out"
        self.out.mkdir()
        (self.dir / "mda.py").write_text(MDA)
        self.rc = self.dir / "fetchmailrc"
        self.idfile = self.dir / "fetchids"
        options = KEEP + ["sslproto ''"] if options is None else options
        self.rc.write_text(textwrap.dedent(f"""\
            set no syslog
            set invisible
            set no bouncemail
            poll {poll} service {port} protocol pop3 uidl timeout {timeout}
                user "{user}" there with password "{password}"
            """) + "".join(f"    {l}\n" for l in options)
            + f"    mda \"{sys.executable} {self.dir / 'mda.py'} {self.out}\"\n")
        os.chmod(self.rc, 0o600)
        self.runs = 0

    def run(self, timeout: float = 300, keep: bool = True) -> subprocess.CompletedProcess:
        """One poll; `keep=False` runs it with `--nokeep` (RETR, then DELE each message)."""
        self.runs += 1
        env = dict(os.environ, HOME=str(self.dir), FETCHMAILHOME=str(self.dir))
        for v in ("FETCHMAILUSER", "LOGNAME", "USER"):
            env.pop(v, None)
        cmd = ["fetchmail", "-v", "-f", str(self.rc), "--idfile", str(self.idfile),
               "--pidfile", str(self.dir / "fetchmail.pid"),
               "--protocol", "pop3", "--uidl", "--keep" if keep else "--nokeep", "--invisible"]
        r = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, cwd=self.dir)
        (self.dir / f"run{self.runs}.log").write_bytes(r.stdout + b"\n--- stderr\n" + r.stderr)
        return r

    def take(self) -> list[Path]:
        """The files delivered since the last call (moved aside)."""
        files = sorted(self.out.iterdir())
        dest = self.dir / f"batch{self.runs}"
        dest.mkdir()
        moved = []
        for f in files:
            t = dest / f.name
            f.rename(t)
            moved.append(t)
        return moved

    def describe(self, r) -> str:
        tail = (r.stdout + r.stderr).decode(errors="replace").splitlines()[-25:]
        return f"exit {r.returncode}; output tail:\n" + "\n".join(tail)
