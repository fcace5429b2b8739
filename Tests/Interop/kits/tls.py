"""TLS and security-policy helpers: certificates, client contexts, a server with STLS and
POP3S listeners, openssl s_client, PROXY protocol headers and /proc ids.

Standard library only.  Certificates are made with the `openssl` command line: a
self-signed test CA and leaf certificates signed by it, so every client can verify
the server with the CA file (curl --cacert, fetchmail sslcertfile, s_client -CAfile,
Python's SSLContext(cafile=...)).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .launcher import HOST, PostieServer, free_port
from .mail import make_passwd



# --------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------


def run(cmd: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, timeout=timeout, **kw)


def _openssl(args: list[str]) -> None:
    r = run(["openssl"] + args)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))} failed: {r.stderr.decode(errors='replace')}")


@dataclass
class Leaf:
    """A server certificate signed by the test CA."""

    name: str
    cert: Path
    key: Path
    serial: int
    cn: str
    sans: list[str]

    def install(self, cert: Path, key: Path) -> None:
        """Writes this certificate and key to the given paths (atomic rename, as a deploy tool would)."""
        for src, dst in ((self.cert, cert), (self.key, key)):
            tmp = dst.with_name(dst.name + ".new")
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o600)
            os.rename(tmp, dst)


class TestCA:
    """A throw-away certificate authority."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, cn: str = "Postie Interop Test CA", days: int = 30,
                 name: str = "ca", parent: "TestCA | None" = None):
        """A self-signed root, or with `parent` an intermediate CA signed by it."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / f"{name}.pem"
        self.key = self.dir / f"{name}.key"
        signer = ["-CA", str(parent.cert), "-CAkey", str(parent.key)] if parent else []
        _openssl(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", str(self.key), "-out", str(self.cert), "-days", str(days), "-subj", f"/CN={cn}",
                  *signer,
                  "-addext", "basicConstraints=critical,CA:TRUE" + (",pathlen:0" if parent else ""),
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"])

    def intermediate(self, name: str, cn: str, days: int = 30) -> "TestCA":
        """An intermediate CA signed by this one (files `name`.pem and `name`.key)."""
        return TestCA(self.dir, cn, days=days, name=name, parent=self)

    def leaf(self, name: str, cn: str, sans: list[str], serial: int, days: int = 30, rsa: bool = False) -> Leaf:
        """A P-256 leaf, or with `rsa` an RSA-2048 one."""
        cert = self.dir / f"{name}.pem"
        key = self.dir / f"{name}.key"
        key_type = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        _openssl(["req", "-x509", "-new", *key_type, "-nodes",
                  "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", f"/CN={cn}",
                  "-CA", str(self.cert), "-CAkey", str(self.key), "-set_serial", str(serial),
                  "-addext", "subjectAltName=" + ",".join(sans),
                  "-addext", "basicConstraints=critical,CA:FALSE",
                  "-addext", "keyUsage=critical,digitalSignature",
                  "-addext", "extendedKeyUsage=serverAuth"])
        return Leaf(name, cert, key, serial, cn, sans)

    def expired_leaf(self, name: str, cn: str, sans: list[str], serial: int) -> Leaf:
        """A leaf that was valid for 90 days and expired 2 days ago. `openssl req/x509` cannot
        back-date certificates, so it is built with python's `cryptography`."""
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        alt = []
        for s in sans:
            kind, _, value = s.partition(":")
            if kind == "DNS":
                alt.append(x509.DNSName(value))
            else:
                import ipaddress
                alt.append(x509.IPAddress(ipaddress.ip_address(value)))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(now - datetime.timedelta(days=92))
                .not_valid_after(now - datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        return Leaf(name, cert_path, key_path, serial, cn, sans)


def self_signed(directory: Path, name: str, cn: str, sans: list[str], days: int = 400) -> Leaf:
    """A self-signed server certificate (its own CA: trusted only when given as the CA file)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", f"/CN={cn}",
              "-addext", "subjectAltName=" + ",".join(sans),
              "-addext", "extendedKeyUsage=serverAuth"])
    return Leaf(name, cert, key, 1, cn, sans)


@dataclass
class PKI:
    ca: TestCA
    a: Leaf  # the default server certificate
    b: Leaf  # its replacement in the reload test
    other: Leaf  # for SNI name other.test

    @property
    def cafile(self) -> Path:
        return self.ca.cert


def make_pki(directory: Path) -> PKI:
    ca = TestCA(directory)
    local = ["DNS:localhost", "IP:127.0.0.1"]
    return PKI(
        ca=ca,
        a=ca.leaf("server-a", "postie-a.test", local, 0x1001),
        b=ca.leaf("server-b", "postie-b.test", local, 0x1002),
        other=ca.leaf("other", "other.test", ["DNS:other.test"], 0x2001),
    )


def client_context(cafile: Path, *, minimum: ssl.TLSVersion | None = None,
                   maximum: ssl.TLSVersion | None = None, check_hostname: bool = True) -> ssl.SSLContext:
    """A verifying client context that trusts only the test CA."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = check_hostname
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def cert_serial(peercert: dict) -> int:
    return int(peercert["serialNumber"], 16)


def cert_cn(peercert: dict) -> str:
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return ""


# --------------------------------------------------------------------------
# The server with TLS
# --------------------------------------------------------------------------


@dataclass
class TLSServer:
    """A running server with a STLS listener (`plain`), optionally an implicit-TLS one (`tls`),
    certificate files of its own (`cert`, `key`: replace them to test SIGHUP) and users
    alice and bob from conftest."""

    server: PostieServer
    plain: int
    tls: int | None
    cert: Path
    key: Path
    template: str
    extra_ports: dict[str, int] = field(default_factory=dict)

    def maildir_path(self, user: str) -> Path:
        return Path(self.template.replace("%u", user))

    def hup(self) -> None:
        self.server.proc.send_signal(signal.SIGHUP)


def start_tls_server(factory, tmp: Path, pki: PKI, *, implicit: bool = True, extra: list[str] | None = None,
                     listen_opts: str = "", extra_listens: dict[str, str] | None = None,
                     config: str | None = None, passwd: Path | None = None, template: str | None = None,
                     name: str | None = None) -> TLSServer:
    """Starts `postie serve` with cert A (copied into tmp) and waits until every listener is bound.

    listen_opts: options after the STLS listener's address (e.g. "deny=127.0.0.2").
    extra_listens: label -> options; each gets another plain listener on a fresh port.
    config: YAML text for --config.
    """
    if passwd is None:
        passwd = make_passwd(tmp).path
    template = template or str(tmp / "mail" / "%u")
    cert, key = tmp / "server-cert.pem", tmp / "server-key.pem"
    if not cert.exists():
        pki.a.install(cert, key)
    plain = free_port()
    args = ["--tls-cert", str(cert), "--tls-key", str(key)]
    tls_port = None
    if implicit:
        tls_port = free_port()
        args += ["--listen-tls", f"{HOST}:{tls_port}"]
    ports = {}
    for label, opts in (extra_listens or {}).items():
        p = free_port()
        ports[label] = p
        args += ["--listen", f"{HOST}:{p} {opts}".strip()]
    if config is not None:
        cfg = tmp / f"postie-{name or 'tls'}.yaml"
        cfg.write_text(config)
        args += ["--config", str(cfg)]
    args += extra or []
    # The first --listen comes from the factory; listener options are appended to the spec
    # by putting the whole listener in `extra` instead when there are any.
    if listen_opts:
        s = factory.make(passwd=passwd, maildir=template, listen=[(HOST, free_port())],
                         extra=["--listen", f"{HOST}:{plain} {listen_opts}"] + args, name=name)
        # the factory's own listener is unused; wait for ours in the log
    else:
        s = factory.make(passwd=passwd, maildir=template, listen=[(HOST, plain)], extra=args, name=name)
    s.start(ready_timeout=15)
    want = [plain] + ([tls_port] if tls_port else []) + list(ports.values())
    for p in want:
        s.wait_log(rf"master: Info: Listening on 127\.0\.0\.1:{p} ", timeout=10)
    return TLSServer(s, plain, tls_port, cert, key, template, ports)


# --------------------------------------------------------------------------
# openssl s_client
# --------------------------------------------------------------------------


def s_client(args: list[str], stdin: bytes = b"", timeout: float = 20) -> subprocess.CompletedProcess:
    """`openssl s_client` with stdin fed from bytes; never waits for a terminal."""
    return subprocess.run(["openssl", "s_client"] + [str(a) for a in args], input=stdin,
                          capture_output=True, timeout=timeout)


def s_client_summary(r: subprocess.CompletedProcess) -> str:
    out = (r.stdout + b"\n" + r.stderr).decode(errors="replace")
    keep = [l for l in out.splitlines()
            if re.search(r"Protocol|Cipher is|alert|error|Verif|CONNECTED|errno", l)]
    return f"exit {r.returncode}: " + " | ".join(keep[:12])


def negotiated_protocol(r: subprocess.CompletedProcess) -> str | None:
    """The protocol s_client reports for an established session ("TLSv1.3"), or None if the
    handshake failed (s_client then prints `Cipher is (NONE)`)."""
    out = (r.stdout + r.stderr).decode(errors="replace")
    m = re.search(r"^(?:New|Reused), (\S+), Cipher is (\S+)", out, re.M)
    if not m or m.group(2) == "(NONE)":
        return None
    return m.group(1).rstrip(",")


# --------------------------------------------------------------------------
# PROXY protocol headers (HAProxy's proxy-protocol.txt)
# --------------------------------------------------------------------------

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src: str, dst: str, sport: int, dport: int, command: int = 0x1) -> bytes:
    if ":" in src:
        fam = 0x21
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam = 0x11
        body = socket.inet_aton(src) + socket.inet_aton(dst)
    body += sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return PROXY_V2_SIGNATURE + bytes([0x20 | command, fam]) + len(body).to_bytes(2, "big") + body


# --------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------


def proc_ids(pid: int, tid: int | None = None) -> dict:
    """Uid, Gid (each [real, effective, saved, filesystem]), Groups and State of
    /proc/PID/status, or of one thread's /proc/PID/task/TID/status."""
    path = Path(f"/proc/{pid}/status") if tid is None else Path(f"/proc/{pid}/task/{tid}/status")
    out: dict = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("Uid", "Gid"):
            out[k] = [int(x) for x in v.split()]
        if k == "Groups":
            out[k] = [int(x) for x in v.split()]
        if k == "State":
            out[k] = v.strip()
    return out


def thread_ids(pid: int) -> dict[int, dict]:
    """proc_ids of every thread of the process."""
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(t.name)] = proc_ids(pid, int(t.name))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out
