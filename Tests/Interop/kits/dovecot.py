"""Dovecot (Debian's dovecot-pop3d) as a real POP3 server for interop tests.

`start_dovecot` writes a self-contained config (its own base_dir, log file, loopback
listeners on free ports, a Dovecot passwd-file that Postie's `--passwd-file` reads too)
and runs `dovecot -F -c FILE` in the foreground so the test owns the process.

Dovecot refuses to run mail processes as root, so mail belongs to an unprivileged
`vmail` user (created when missing) and everything lives under a world-traversable
directory in /tmp (pytest's own temp root is mode 0700). Call `fix_ownership()` after
writing into a Maildir as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .launcher import free_port
from .mail import Maildir

VMAIL = "vmail"


def dovecot_binary() -> str:
    for candidate in (shutil.which("dovecot"), "/usr/sbin/dovecot"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError("dovecot is missing: install dovecot-core and dovecot-pop3d (scripts/test does)")


def ensure_vmail() -> pwd.struct_passwd:
    """The unprivileged user Dovecot runs mail processes as."""
    try:
        return pwd.getpwnam(VMAIL)
    except KeyError:
        subprocess.run(["useradd", "-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", VMAIL],
                       check=True, capture_output=True, timeout=30)
        return pwd.getpwnam(VMAIL)


class DovecotServer:
    """One Dovecot instance serving POP3 (and POP3S when given a certificate) on loopback."""

    host = "127.0.0.1"

    def __init__(self, root: Path, users: dict[str, str], *, cert: Path | None, key: Path | None,
                 ssl: str, disable_plaintext_auth: bool, ssl_min_protocol: str,
                 ssl_cipher_list: str | None, auth_mechanisms: str, uidl_format: str, extra_conf: str,
                 control: bool = False, mail_location: str | None = None):
        """`mail_location` replaces the default `maildir:MAIL_ROOT/%u` (e.g. Debian's
        `mbox:~/mail:INBOX=/var/mail/%u`; each user's home is MAIL_ROOT/USER)."""
        self.root = root
        self.users = dict(users)
        self.mail_root = root / "mail"
        # mail_location's :CONTROL= (dovecot-uidlist outside the Maildir), when asked for.
        self.control_root = root / "control" if control else None
        self.passwd_path = root / "passwd"
        self.log_path = root / "dovecot.log"
        self.conf_path = root / "dovecot.conf"
        self.port = free_port()
        self.tls_port: int | None = free_port() if (cert is not None and ssl != "no") else None
        self.proc: subprocess.Popen | None = None
        self._stdout_path = root / "dovecot.stdout"

        self.vmail = ensure_vmail()
        self.mail_root.mkdir(parents=True, exist_ok=True)
        if self.control_root:
            self.control_root.mkdir(parents=True, exist_ok=True)
            os.chown(self.control_root, self.vmail.pw_uid, self.vmail.pw_gid)
        for u in users:
            self.maildir(u).create()
        self.passwd_path.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users.items()))

        tls = ""
        if ssl != "no":
            if cert is None or key is None:
                raise ValueError("ssl=yes|required needs cert and key")
            tls = f"ssl_cert = <{cert}\nssl_key = <{key}\nssl_min_protocol = {ssl_min_protocol}\n"
            if ssl_cipher_list:
                tls += f"ssl_cipher_list = {ssl_cipher_list}\n"
        pop3s = (f"  inet_listener pop3s {{\n    address = {self.host}\n    port = {self.tls_port}\n"
                 f"    ssl = yes\n  }}\n") if self.tls_port else \
            "  inet_listener pop3s {\n    port = 0\n  }\n"
        self.conf_path.write_text(f"""# written by Tests/Interop/kits/dovecot.py
base_dir = {root / 'run'}
instance_name = postie-test-{self.port}
log_path = {self.log_path}
protocols = pop3
listen = {self.host}
ssl = {ssl}
{tls}disable_plaintext_auth = {'yes' if disable_plaintext_auth else 'no'}
auth_mechanisms = {auth_mechanisms}
auth_verbose = yes
first_valid_uid = {self.vmail.pw_uid}
default_internal_user = {VMAIL}
default_login_user = {VMAIL}
mail_location = {mail_location or f"maildir:{self.mail_root}/%u" + (f':CONTROL={self.control_root}/%u' if self.control_root else '')}
pop3_uidl_format = {uidl_format}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_path}
}}
userdb {{
  driver = static
  args = uid={self.vmail.pw_uid} gid={self.vmail.pw_gid} home={self.mail_root}/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {self.host}
    port = {self.port}
  }}
{pop3s}}}
service anvil {{
  chroot =
}}
{extra_conf}
""")

    def maildir(self, user: str) -> Maildir:
        return Maildir(self.mail_root / user)

    def fix_ownership(self) -> None:
        """Hands the mail root to vmail (after a test or Postie wrote into it as root)."""
        uid, gid = self.vmail.pw_uid, self.vmail.pw_gid
        for top in [self.mail_root] + ([self.control_root] if self.control_root else []):
            top.mkdir(parents=True, exist_ok=True)
            os.chown(top, uid, gid)
            for dirpath, dirnames, filenames in os.walk(top):
                for n in dirnames + filenames:
                    os.lchown(os.path.join(dirpath, n), uid, gid)

    def start(self, timeout: float = 20.0, wrapper: list[str] | None = None) -> "DovecotServer":
        """`wrapper` goes before the command (bench/instructions.py runs Dovecot under Valgrind)."""
        self.fix_ownership()
        out = open(self._stdout_path, "ab")
        self.proc = subprocess.Popen([*(wrapper or []), dovecot_binary(), "-F", "-c", str(self.conf_path)],
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dovecot exited with {self.proc.returncode}:\n{self.output_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(512).startswith(b"+OK"):
                        return self
            except OSError as e:
                last = e
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"dovecot did not answer on {self.port} ({last}):\n{self.output_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
        # The master's children exit on their own; wait until the listener is gone so a
        # restart on the same ports cannot race them.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
            except OSError:
                break
            time.sleep(0.1)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def output_tail(self, n: int = 40) -> str:
        text = ""
        for p in (self._stdout_path, self.log_path):
            try:
                text += "\n".join(p.read_text(errors="replace").splitlines()[-n:]) + "\n"
            except FileNotFoundError:
                pass
        return text


def start_dovecot(directory: Path | None, users: dict[str, str], *, cert: Path | None = None,
                  key: Path | None = None, ssl: str = "yes", disable_plaintext_auth: bool = False,
                  ssl_min_protocol: str = "TLSv1.2", ssl_cipher_list: str | None = None,
                  auth_mechanisms: str = "plain login cram-md5 scram-sha-1 scram-sha-256",
                  uidl_format: str = "%08Xu%08Xv", extra_conf: str = "", control: bool = False) -> DovecotServer:
    """Starts Dovecot; without `cert` it runs with `ssl = no` (no STLS, no 995).

    Files live in a fresh mode-0755 directory under /tmp; `directory` (a test's tmp_path)
    gets a `dovecot` symlink to it for reading logs after a failure."""
    if cert is None:
        ssl = "no"
    root = Path(tempfile.mkdtemp(prefix="postie-dovecot-", dir="/tmp"))
    os.chmod(root, 0o755)
    if directory is not None:
        link = Path(directory) / "dovecot"
        if not link.exists():
            link.symlink_to(root)
    d = DovecotServer(root, users, cert=cert, key=key, ssl=ssl,
                      disable_plaintext_auth=disable_plaintext_auth, ssl_min_protocol=ssl_min_protocol,
                      ssl_cipher_list=ssl_cipher_list, auth_mechanisms=auth_mechanisms,
                      uidl_format=uidl_format, extra_conf=extra_conf, control=control)
    return d.start()


def remove(d: DovecotServer) -> None:
    d.stop()
    shutil.rmtree(d.root, ignore_errors=True)
