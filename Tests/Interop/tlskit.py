"""Helpers for the TLS and security-policy interop tests (test_tls.py, test_policy.py).

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
import time
from dataclasses import dataclass, field
from pathlib import Path

from postiekit import CRLF, PostieServer, free_port

HOST = "127.0.0.1"


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

    def leaf(self, name: str, cn: str, sans: list[str], serial: int, days: int = 30) -> Leaf:
        cert = self.dir / f"{name}.pem"
        key = self.dir / f"{name}.key"
        _openssl(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
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
# A line client that can start TLS on the same socket
# --------------------------------------------------------------------------


class Conn:
    """A POP3 client on a raw socket with its own buffer, so a test can see exactly what
    arrived before and after STLS.  `source` binds the client to another loopback address
    (127.0.0.2, ...) before connecting."""

    def __init__(self, port: int, *, host: str = HOST, source: str | None = None, timeout: float = 10.0,
                 tls: ssl.SSLContext | None = None, server_hostname: str | None = "localhost",
                 greeting: bool = True):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.transcript: list[str] = []
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
        self.greeting = self.reply() if greeting else None

    # raw I/O
    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.transcript.append(f"C: {data[:120]!r}")
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def readline(self) -> bytes:
        """One line without CRLF; EOFError at EOF."""
        while b"\r\n" not in self.buf:
            if not self._fill():
                self.transcript.append(f"S: <EOF> (pending {self.buf[:80]!r})")
                raise EOFError(f"server closed the connection; transcript: {self.tail()}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        self.transcript.append(f"S: {line[:120]!r}")
        return line

    def reply(self) -> str:
        return self.readline().decode("utf-8", "replace")

    def cmd(self, line: str) -> str:
        self.send(line.encode() + CRLF)
        return self.reply()

    def ok(self, line: str) -> str:
        r = self.cmd(line)
        assert r.startswith("+OK"), f"{line!r} got {r!r}; transcript: {self.tail()}"
        return r

    def read_multiline(self) -> list[bytes]:
        lines = []
        while True:
            line = self.readline()
            if line == b".":
                return lines
            lines.append(line[1:] if line.startswith(b".") else line)

    def multi(self, line: str) -> tuple[str, list[bytes]]:
        r = self.cmd(line)
        return (r, self.read_multiline()) if r.startswith("+OK") else (r, [])

    def capa(self) -> list[str]:
        r, lines = self.multi("CAPA")
        assert r.startswith("+OK"), f"CAPA got {r!r}"
        return [l.decode() for l in lines]

    def retr(self, n: int) -> bytes:
        r, lines = self.multi(f"RETR {n}")
        assert r.startswith("+OK"), f"RETR {n} got {r!r}"
        return b"".join(l + CRLF for l in lines)

    def login(self, user: str, password: str) -> str:
        self.ok(f"USER {user}")
        return self.ok(f"PASS {password}")

    def starttls(self, ctx: ssl.SSLContext, server_hostname: str | None = "localhost") -> None:
        """The TLS handshake on the same socket, after the client read `+OK` to STLS."""
        assert self.buf == b"", f"the server sent plaintext after its STLS reply: {self.buf[:200]!r}"
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)

    def read_until_eof(self, timeout: float = 5.0) -> bytes:
        """Everything the server still sends until it closes; raises if it stays open."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self._fill():
                    data, self.buf = self.buf, b""
                    return data
        except socket.timeout:
            pass
        raise AssertionError(f"connection still open after {timeout}s (received {self.buf[:200]!r})")

    @property
    def cipher(self):
        return self.sock.cipher() if isinstance(self.sock, ssl.SSLSocket) else None

    @property
    def version(self):
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None

    def peercert(self) -> dict:
        return self.sock.getpeercert()

    def tail(self, n: int = 12) -> str:
        return " | ".join(self.transcript[-n:])

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect_raw(port: int, source: str | None = None, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_all(s: socket.socket, timeout: float = 5.0) -> bytes:
    """Reads until EOF (or reset); raises if the peer keeps the connection open."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data
        except socket.timeout:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"connection still open after {timeout}s (received {data[:200]!r})")


# --------------------------------------------------------------------------
# The server with TLS
# --------------------------------------------------------------------------


def wait_log(server: PostieServer, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
    """Waits until `count` log lines match `pattern` (a regex); returns the matching lines."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        found = [l for l in server.log_text().splitlines() if rx.search(l)]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"log of {server.name}: {count} line(s) matching {pattern!r} not seen within "
                                 f"{timeout}s (saw {len(found)}); tail:\n{server.log_tail(30)}")
        if server.proc is not None and server.proc.poll() is not None:
            raise AssertionError(f"{server.name} exited with {server.proc.returncode}; tail:\n{server.log_tail(30)}")
        time.sleep(0.05)


def log_lines(server: PostieServer, pattern: str) -> list[str]:
    rx = re.compile(pattern)
    return [l for l in server.log_text().splitlines() if rx.search(l)]


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
    from conftest import make_passwd  # the suite's users (alice SHA512-CRYPT, bob PLAIN)

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
        wait_log(s, rf"master: Info: Listening on 127\.0\.0\.1:{p} ", timeout=10)
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
