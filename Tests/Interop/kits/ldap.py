"""A throwaway OpenLDAP slapd for the tests: Debian's `slapd` package run from a slapd.conf
in a directory of the test's own, on 127.0.0.1 and a free port, in the foreground (`-d 0`),
never the system's instance. Entries are loaded with `ldapadd` as the root DN.

    server = Slapd(tmp_path / "slapd", suffix="dc=example,dc=org").start()
    server.add(ldif)
    server.halt(); server.resume()    # SIGSTOP / SIGCONT: a directory that does not answer
    server.stop(); server.start()     # down, then back on the same port with the same data

Standard library only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from kits.launcher import free_port

SLAPD = "/usr/sbin/slapd"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

# Two attributes of Active Directory's user class under private OIDs, so that an entry can
# be found by them as in AD (the attribute mapping is tested, not a real AD).
AD_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.32473.16.1.1 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.32473.16.1.2 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.32473.16.2.1 NAME 'postieADUser' SUP top AUXILIARY
  MAY ( sAMAccountName $ userPrincipalName ) )
"""


def require_slapd() -> None:
    missing = [tool for tool in (SLAPD, "ldapadd", "slappasswd") if shutil.which(tool) is None]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}: scripts/test installs Debian's slapd and ldap-utils")


def slappasswd(scheme: str, password: str) -> str:
    """`{SSHA}...` or `{CRYPT}$6$...` as slapd's own tool makes them."""
    args = ["slappasswd", "-h", "{" + scheme + "}", "-s", password]
    if scheme == "CRYPT":
        args += ["-c", "$6$%.16s"]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


class Slapd:
    def __init__(self, directory: Path, suffix: str, root_password: str = "root-secret", acl: str = "",
                 tls: tuple[Path, Path] | None = None):
        """`tls`: a certificate and key file, for StartTLS on the same port and for `ldaps://` on
        `ldaps_uri`."""
        require_slapd()
        self.directory = directory
        self.suffix = suffix
        self.root_dn = f"cn=admin,{suffix}"
        self.root_password = root_password
        self.port = free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_uri = f"ldaps://127.0.0.1:{free_port()}" if tls else None
        self.proc: subprocess.Popen | None = None
        (directory / "data").mkdir(parents=True, exist_ok=True)
        (directory / "ad.schema").write_text(AD_SCHEMA)
        includes = "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in SCHEMAS)
        (directory / "slapd.conf").write_text(
            f"{includes}include {directory}/ad.schema\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f"pidfile {directory}/slapd.pid\n"
            # Unauthenticated binds (a DN with no password) succeed here, as on many servers:
            # the tests prove that Postie never lets an empty password through to one.
            "allow bind_anon_dn\n"
            + (f"TLSCertificateFile {tls[0]}\nTLSCertificateKeyFile {tls[1]}\n" if tls else "")
            + f"database mdb\nsuffix \"{suffix}\"\nrootdn \"{self.root_dn}\"\nrootpw {root_password}\n"
            f"directory {directory}/data\n{acl}")

    def start(self, timeout: float = 30.0) -> "Slapd":
        log = open(self.directory / "slapd.log", "ab")
        listeners = f"{self.uri}/" + (f" {self.ldaps_uri}/" if self.ldaps_uri else "")
        self.proc = subprocess.Popen([SLAPD, "-d", "0", "-h", listeners, "-f", str(self.directory / "slapd.conf")],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited: {(self.directory / 'slapd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("slapd did not listen in time")

    def add(self, ldif: str) -> None:
        r = subprocess.run(["ldapadd", "-x", "-H", self.uri, "-D", self.root_dn, "-w", self.root_password],
                           input=ldif, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"ldapadd failed ({r.returncode}): {r.stderr}{r.stdout[-2000:]}")

    def set_password(self, dn: str, stored: str) -> None:
        """Replaces an entry's userPassword (as the root DN)."""
        r = subprocess.run(["ldapmodify", "-x", "-H", self.uri, "-D", self.root_dn, "-w", self.root_password],
                           input=f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {stored}\n",
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"ldapmodify failed ({r.returncode}): {r.stderr}")

    def halt(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
