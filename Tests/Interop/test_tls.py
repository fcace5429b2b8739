"""TLS: STLS (RFC 2595 section 4) and implicit TLS (RFC 8314) with real clients, TLS
versions (RFC 8996), STLS command injection, certificate reload on SIGHUP and SNI
(RFC 6066 section 3).  Certificates come from a throw-away CA made with `openssl req`."""

from __future__ import annotations

import poplib
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from kits.launcher import free_port, HOST
from kits.mail import ALICE, canonical_crlf, canonical_lf, corpus, CRLF, dot_stuff, Maildir, make_passwd, sha
from kits.pop3 import POP3Raw
from kits.tls import (
    cert_cn,
    cert_serial,
    client_context,
    negotiated_protocol,
    s_client,
    s_client_summary,
    start_tls_server,
)
from kits.tools import curl, Fetchmail


def deliver_corpus(srv, user: str = "alice") -> dict[str, bytes]:
    """Delivers the suite's corpus (every message but the 0-byte one) and returns it."""
    md = Maildir(srv.maildir_path(user)).create()
    msgs = dict(corpus())
    for data in msgs.values():
        md.deliver(data)
    return msgs


def assert_received(expected: dict[str, bytes], got: list[bytes], form: str, client: str) -> None:
    """`got` must hold each expected message exactly once, in `form` ('crlf' or 'lf')."""
    conv = canonical_crlf if form == "crlf" else canonical_lf
    want = {sha(conv(d)): label for label, d in expected.items()}
    got_hashes = [sha(g) for g in got]
    missing = [want[h] for h in want if h not in got_hashes]
    strange = [f"{len(g)} octets {g[:60]!r}" for g in got if sha(g) not in want]
    assert not missing and not strange and len(got) == len(expected), (
        f"{client}: not byte-exact: missing {missing}, unexpected {strange}, got {len(got)} of {len(expected)}")


def tls_logins(srv, user: str) -> tuple[list[str], list[str]]:
    """(logins over TLS, logins without TLS) of `user` in the server log."""
    lines = srv.server.log_lines(rf"pop3-login: Info: Login: user=<{user}>")
    return [l for l in lines if ", TLS, session=" in l], [l for l in lines if ", TLS, session=" not in l]


# --------------------------------------------------------------------------
# 1. Real clients download byte-exact over STLS and implicit TLS
# --------------------------------------------------------------------------


def test_curl_stls_and_pop3s_download_byte_exact(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki)
    expected = deliver_corpus(srv)
    auth = ["-u", f"{ALICE[0]}:{ALICE[1]}", "--cacert", pki.cafile]
    variants = {
        # STLS on the plain port; --ssl-reqd makes curl fail rather than fall back to plaintext.
        "STLS": (f"pop3://127.0.0.1:{srv.plain}/", ["--ssl-reqd"]),
        # Implicit TLS, verified by name (localhost) rather than by IP address.
        "pop3s": (f"pop3s://localhost:{srv.tls}/", ["--resolve", f"localhost:{srv.tls}:127.0.0.1"]),
    }
    runs = 0
    for label, (base, extra) in variants.items():
        r = curl([base] + auth + extra, timeout=30)
        runs += 1
        assert r.returncode == 0, f"curl {label} LIST: exit {r.returncode}: {r.stderr.decode()}"
        lines = r.stdout.decode().split("\r\n")[:-1]
        sizes = {int(l.split()[0]): int(l.split()[1]) for l in lines}
        assert len(sizes) == len(expected), f"curl {label}: LIST shows {len(sizes)} messages, delivered {len(expected)}"
        got = []
        for n in sorted(sizes):
            r = curl([f"{base}{n}"] + auth + extra, timeout=30)
            runs += 1
            assert r.returncode == 0, f"curl {label} RETR {n}: exit {r.returncode}: {r.stderr.decode()}"
            assert len(r.stdout) == sizes[n], f"curl {label} RETR {n}: {len(r.stdout)} octets, LIST said {sizes[n]}"
            got.append(r.stdout)
        assert_received(expected, got, "crlf", f"curl {label}")
    over_tls, plain = tls_logins(srv, "alice")
    assert not plain, f"curl logged in without TLS: {plain[:2]}"
    assert len(over_tls) == runs, f"{runs} curl runs but {len(over_tls)} TLS logins in the log"


def test_poplib_stls_and_pop3_ssl_download_byte_exact(postie, tmp_path, pki, monkeypatch):
    # poplib caps lines at 2048 octets; the corpus has a 5000-octet line (RFC 1939 sets no limit).
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 16)
    srv = start_tls_server(postie, tmp_path, pki)
    expected = deliver_corpus(srv)
    ctx = client_context(pki.cafile)

    def fetch(p: poplib.POP3, label: str) -> None:
        assert isinstance(p.sock, ssl.SSLSocket), f"poplib {label}: socket is not TLS"
        assert p.sock.version() in ("TLSv1.2", "TLSv1.3"), f"poplib {label}: negotiated {p.sock.version()}"
        assert cert_serial(p.sock.getpeercert()) == pki.a.serial
        caps = p.capa()
        assert "USER" in caps and "STLS" not in caps, f"poplib {label}: CAPA under TLS is {sorted(caps)}"
        p.user(ALICE[0])
        p.pass_(ALICE[1])
        count, total = p.stat()
        assert count == len(expected)
        got = []
        for n in range(1, count + 1):
            _, lines, octets = p.retr(n)
            got.append(b"".join(l + CRLF for l in lines))
        assert_received(expected, got, "crlf", f"poplib {label}")
        assert p.quit().startswith(b"+OK")

    p = poplib.POP3(HOST, srv.plain, timeout=15)
    try:
        assert "STLS" in p.capa(), "CAPA on the plain port does not offer STLS"
        assert p.stls(context=ctx).startswith(b"+OK")
        fetch(p, "stls()")
    finally:
        p.close()
    p = poplib.POP3_SSL(HOST, srv.tls, context=ctx, timeout=15)
    try:
        fetch(p, "POP3_SSL")
    finally:
        p.close()
    over_tls, plain = tls_logins(srv, "alice")
    assert len(over_tls) == 2 and not plain, f"TLS logins {len(over_tls)}, plaintext logins {len(plain)}"


def run_fetchmail(tmp: Path, name: str, port: int, ssl_lines: list[str], cafile: Path) -> tuple[subprocess.CompletedProcess, list[bytes]]:
    # `poll localhost`: fetchmail checks the certificate's name against the poll name.
    fm = Fetchmail(tmp / f"fetchmail-{name}", port, *ALICE, poll="localhost", timeout=30,
                   options=["keep", "fetchall", "no rewrite", "no mimedecode", *ssl_lines,
                            "sslcertck", f'sslcertfile "{cafile}"'])
    r = fm.run(timeout=60)
    return r, [f.read_bytes() for f in fm.take()]


def test_fetchmail_stls_and_implicit_tls_download_byte_exact(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki)
    expected = deliver_corpus(srv)
    cases = {
        # No `ssl`: fetchmail connects in plaintext and upgrades with STLS; with sslproto set it
        # refuses to continue if STLS fails (fetchmail(1), --sslproto).
        "STLS": (srv.plain, ["sslproto 'tls1.2+'"]),
        "implicit TLS": (srv.tls, ["ssl", "sslproto 'tls1.2+'"]),
    }
    for label, (port, lines) in cases.items():
        r, files = run_fetchmail(tmp_path, label.replace(" ", "-"), port, lines, pki.cafile)
        out = (r.stdout + r.stderr).decode(errors="replace")
        tail = "\n".join(out.splitlines()[-20:])
        assert r.returncode == 0, f"fetchmail {label}: exit {r.returncode}:\n{tail}"
        assert "SSL/TLS: using protocol TLSv1." in out, f"fetchmail {label} did not report TLS:\n{tail}"
        if label == "STLS":
            assert "POP3> STLS" in out and "upgrade to TLS succeeded" in out, f"fetchmail did not use STLS:\n{tail}"
        # fetchmail turns CRLF into LF before handing a message to the MDA.
        assert_received(expected, files, "lf", f"fetchmail {label}")
    over_tls, plain = tls_logins(srv, "alice")
    assert len(over_tls) == 2 and not plain, f"TLS logins {len(over_tls)}, plaintext logins {len(plain)}"


def parse_s_client_session(out: bytes, n: int) -> list[bytes]:
    """The wire bodies of n RETRs in s_client's output, after `+OK Logged in.`.

    s_client -starttls pop3 prints a stray buffer before the session data (openssl 3.0:
    the greeting padded with NULs to the length of the STLS reply), so parsing starts at
    the PASS reply."""
    marker = b"+OK Logged in.\r\n"
    i = out.find(marker)
    assert i >= 0, f"no '+OK Logged in.' in s_client output: {out[:400]!r}"
    rest = out[i + len(marker):]
    bodies = []
    for k in range(1, n + 1):
        status, _, rest = rest.partition(b"\r\n")
        assert status.startswith(b"+OK"), f"RETR {k}: status {status!r}"
        end = rest.find(b"\r\n.\r\n")
        if rest.startswith(b".\r\n"):
            end = -2
        assert end >= -2, f"RETR {k}: no terminator in {rest[:200]!r}"
        bodies.append(rest[:end + 5])
        rest = rest[end + 5:]
    assert rest.startswith(b"+OK"), f"QUIT reply missing: {rest[:200]!r}"
    return bodies


def test_openssl_s_client_starttls_and_implicit_download_byte_exact(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki)
    expected = deliver_corpus(srv)
    n = len(expected)
    script = (f"USER {ALICE[0]}\nPASS {ALICE[1]}\n" + "".join(f"RETR {k}\n" for k in range(1, n + 1)) + "QUIT\n").encode()
    verify = ["-CAfile", pki.cafile, "-verify_return_error", "-verify_hostname", "localhost", "-servername", "localhost"]
    # -quiet also means -ign_eof: s_client keeps reading until the server closes after QUIT,
    # and lines starting with R (RETR) are not taken as "renegotiate".
    for label, args in {
        "-starttls pop3": ["-connect", f"{HOST}:{srv.plain}", "-starttls", "pop3"],
        "implicit": ["-connect", f"{HOST}:{srv.tls}"],
    }.items():
        r = s_client(args + verify + ["-crlf", "-quiet"], stdin=script)
        assert r.returncode == 0, f"s_client {label}: {s_client_summary(r)}; stdout {r.stdout[:300]!r}"
        wires = parse_s_client_session(r.stdout, n)
        want = {dot_stuff(canonical_crlf(d)): lab for lab, d in expected.items()}
        got = sorted(want.get(w, f"<unexpected {len(w)} octets {w[:60]!r}>") for w in wires)
        assert got == sorted(expected), f"s_client {label}: wire bodies are not the stuffed CRLF forms: {got}"
    over_tls, plain = tls_logins(srv, "alice")
    assert len(over_tls) == 2 and not plain, f"TLS logins {len(over_tls)}, plaintext logins {len(plain)}"


# --------------------------------------------------------------------------
# 2. TLS versions (RFC 8996: no TLS 1.0 or 1.1)
# --------------------------------------------------------------------------

OLD_OK = ["-cipher", "DEFAULT@SECLEVEL=0"]  # so that the client itself is willing to speak TLS 1.0/1.1


def test_control_s_client_can_speak_tls1_0(pki, tmp_path):
    """The control for the next test: the same s_client command does negotiate TLS 1.0 with a
    server that allows it (openssl s_server), so a refusal there is the server's doing."""
    port = free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-accept", f"{HOST}:{port}", "-naccept", "1", "-tls1",
                            "-cipher", "DEFAULT@SECLEVEL=0", "-cert", str(pki.a.cert), "-key", str(pki.a.key)],
                           # stdin stays open: s_server ends the connection at EOF on its stdin
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen = []
        while True:  # "ACCEPT" once it listens
            line = srv.stdout.readline()
            seen.append(line)
            if not line or b"ACCEPT" in line:
                break
        assert b"ACCEPT" in seen[-1], f"openssl s_server did not start: {seen!r}"
        r = s_client(["-connect", f"{HOST}:{port}", "-tls1"] + OLD_OK)
        assert negotiated_protocol(r) == "TLSv1.0", f"control failed, s_client cannot do TLS 1.0 here: {s_client_summary(r)}"
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait(5)
        srv.stdin.close()
        srv.stdout.close()


def test_tls_1_0_and_1_1_refused_1_2_and_1_3_accepted(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki)
    modes = {
        "implicit": ["-connect", f"{HOST}:{srv.tls}"],
        "STLS": ["-connect", f"{HOST}:{srv.plain}", "-starttls", "pop3"],
    }
    for mode, base in modes.items():
        for flag in ("-tls1", "-tls1_1"):
            r = s_client(base + [flag] + OLD_OK)
            assert negotiated_protocol(r) is None and r.returncode != 0, \
                f"{mode} {flag}: the server accepted an old TLS version: {s_client_summary(r)}"
            out = (r.stdout + r.stderr).decode(errors="replace")
            assert "alert protocol version" in out, f"{mode} {flag}: expected a protocol_version alert: {s_client_summary(r)}"
        for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            r = s_client(base + [flag, "-CAfile", pki.cafile, "-verify_return_error"])
            assert negotiated_protocol(r) == want and r.returncode == 0, f"{mode} {flag}: {s_client_summary(r)}"
    # Python's ssl, pinned to each version, gets a working session.
    for v, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = client_context(pki.cafile, minimum=v, maximum=v)
        with POP3Raw(HOST, srv.tls, tls=ctx) as c:
            assert c.version == name and c.greeting.startswith(b"+OK")
            c.login(*ALICE)
            c.ok("QUIT")
        with POP3Raw(HOST, srv.plain) as c:
            c.ok("STLS")
            c.starttls(ctx)
            assert c.version == name
            c.login(*ALICE)
            c.ok("QUIT")


def test_tls_min_version_1_3_refuses_tls_1_2(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, extra=["--tls-min-version", "1.3"])
    for mode, base in {"implicit": ["-connect", f"{HOST}:{srv.tls}"],
                       "STLS": ["-connect", f"{HOST}:{srv.plain}", "-starttls", "pop3"]}.items():
        r = s_client(base + ["-tls1_2"])
        assert negotiated_protocol(r) is None and r.returncode != 0, \
            f"{mode}: --tls-min-version 1.3 but TLS 1.2 was accepted: {s_client_summary(r)}"
        r = s_client(base + ["-tls1_3", "-CAfile", pki.cafile, "-verify_return_error"])
        assert negotiated_protocol(r) == "TLSv1.3", f"{mode}: TLS 1.3 failed: {s_client_summary(r)}"
    ctx12 = client_context(pki.cafile, maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        POP3Raw(HOST, srv.tls, tls=ctx12).close()
    with POP3Raw(HOST, srv.tls, tls=client_context(pki.cafile)) as c:
        assert c.version == "TLSv1.3"


# --------------------------------------------------------------------------
# 3. STLS command injection (RFC 2595 section 4; CVE-2011-0411 and kin)
# --------------------------------------------------------------------------


def test_stls_injection_capa_is_discarded(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False)
    ctx = client_context(pki.cafile)
    with POP3Raw(HOST, srv.plain) as c:
        c.send(b"STLS\r\nCAPA\r\n")  # one send(): one TCP segment
        r = c.reply()
        assert r.startswith("+OK"), f"STLS got {r!r}"
        time.sleep(0.2)  # give a vulnerable server time to answer the injected CAPA in plaintext
        c.sock.setblocking(False)
        try:
            leaked = c.sock.recv(4096)
        except BlockingIOError:
            leaked = b""
        c.sock.setblocking(True)
        c.sock.settimeout(10)
        assert leaked == b"", f"the server answered the injected command in plaintext: {leaked[:200]!r}"
        c.starttls(ctx)
        c.send(b"USER alice\r\n")
        first = c.reply()
        assert first.startswith("+OK") and "apabilit" not in first, (
            f"after the handshake the first line is {first!r}, not USER's reply: the CAPA sent before the "
            f"handshake was executed")
        # And nothing else is queued: another USER answers at once with the next line.
        second = c.cmd("USER alice")
        assert second.startswith("+OK") and "apabilit" not in second, f"queued output after USER: {second!r}"
        assert "STLS" not in c.capa(), "CAPA under TLS still offers STLS"
        c.ok("QUIT")


def test_stls_injection_login_is_discarded(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False)
    ctx = client_context(pki.cafile)
    with POP3Raw(HOST, srv.plain) as c:
        c.send(b"STLS\r\nUSER injected\r\nPASS injected-pw\r\n")
        assert c.reply().startswith("+OK")
        c.starttls(ctx)
        assert c.capa()
        # If USER had survived the handshake, PASS alone would log in or fail as 'injected'.
        r = c.cmd("PASS injected-pw")
        assert r.startswith("-ERR"), f"PASS without USER after STLS got {r!r}"
        c.login(*ALICE)
        c.ok("QUIT")
    srv.server.wait_log(r"Disconnected: Logged out")
    bad = srv.server.log_lines(r"user=<injected>")
    assert not bad, f"the server acted on USER/PASS injected before the handshake: {bad}"


def test_stls_injection_partial_line_is_discarded(postie, tmp_path, pki):
    """An incomplete line after STLS ("NOO") must not be kept and completed by the first
    line that arrives under TLS ("P")."""
    srv = start_tls_server(postie, tmp_path, pki, implicit=False)
    with POP3Raw(HOST, srv.plain) as c:
        c.send(b"STLS\r\nNOO")
        assert c.reply().startswith("+OK")
        c.starttls(client_context(pki.cafile))
        r = c.cmd("P")
        assert r.startswith("-ERR"), f"'NOO' sent before the handshake + 'P' after it was executed as NOOP: {r!r}"
        assert c.capa()
        c.ok("QUIT")


def test_stls_capa_and_state_rules(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki)
    ctx = client_context(pki.cafile)
    with POP3Raw(HOST, srv.plain) as c:
        caps = c.capa()
        assert "STLS" in caps, f"CAPA before TLS lacks STLS (RFC 2595 section 4): {caps}"
        c.ok("STLS")
        c.starttls(ctx)
        caps = c.capa()
        assert "USER" in caps and "STLS" not in caps, f"CAPA after STLS: {caps}"
        r = c.cmd("STLS")
        assert r.startswith("-ERR"), f"a second STLS got {r!r}"
        c.login(*ALICE)
        r = c.cmd("STLS")
        assert r.startswith("-ERR"), f"STLS after login got {r!r}"
        assert c.cmd("NOOP").startswith("+OK")
        c.ok("QUIT")
    with POP3Raw(HOST, srv.plain) as c:
        c.login(*ALICE)  # loopback is a trusted network by default
        r = c.cmd("STLS")
        assert r.startswith("-ERR"), f"STLS in TRANSACTION state (plaintext session) got {r!r}"
        c.ok("QUIT")
    with POP3Raw(HOST, srv.tls, tls=ctx) as c:
        caps = c.capa()
        assert "USER" in caps and "STLS" not in caps, f"CAPA on the implicit-TLS port: {caps}"
        assert c.cmd("STLS").startswith("-ERR")
        c.ok("QUIT")


# --------------------------------------------------------------------------
# 6. SIGHUP reloads the certificate; open sessions continue
# --------------------------------------------------------------------------


def test_sighup_reloads_certificate_and_keeps_sessions(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki)
    md = Maildir(srv.maildir_path("alice")).create()
    msg = b"From: a@example.org\nSubject: reload\n\n.dot line\nbody\n"
    md.deliver(msg)
    ctx = client_context(pki.cafile)

    old_tls = POP3Raw(HOST, srv.tls, tls=ctx)
    old_stls = POP3Raw(HOST, srv.plain)
    try:
        old_stls.ok("STLS")
        old_stls.starttls(ctx)
        assert cert_serial(old_tls.peercert()) == pki.a.serial
        assert cert_serial(old_stls.peercert()) == pki.a.serial
        old_tls.login(*ALICE)  # holds alice's mailbox lock; old_stls stays in AUTHORIZATION

        pki.b.install(srv.cert, srv.key)
        hup_ready(srv)
        srv.hup()
        srv.server.wait_log(r"master: Info: SIGHUP: reloaded (?:\S+ and )?TLS certificates")

        for port, label in ((srv.tls, "implicit"), (srv.plain, "STLS")):
            if label == "implicit":
                c = POP3Raw(HOST, port, tls=ctx)
            else:
                c = POP3Raw(HOST, port)
                c.ok("STLS")
                c.starttls(ctx)
            with c:
                pc = c.peercert()
                assert cert_serial(pc) == pki.b.serial and cert_cn(pc) == pki.b.cn, (
                    f"{label}: a new session after SIGHUP got serial {cert_serial(pc):#x} CN {cert_cn(pc)!r}, "
                    f"want the new certificate {pki.b.serial:#x} {pki.b.cn!r}")
                assert c.capa()
                c.ok("QUIT")

        # The sessions opened before the reload still work.
        assert old_tls.cmd("NOOP").startswith("+OK")
        assert old_tls.retr(1) == canonical_crlf(msg)
        assert old_tls.cmd("QUIT").startswith("+OK")
        assert old_stls.capa()
        old_stls.login(*ALICE)
        assert old_stls.retr(1) == canonical_crlf(msg)
        assert old_stls.cmd("QUIT").startswith("+OK")
        assert srv.server.alive()
    finally:
        old_tls.close()
        old_stls.close()


def hup_ready(srv) -> None:
    """Waits until a SIGHUP reloads: during startup the server ignores SIGHUP (it must never
    die of one, see the next test) until its reload service takes the signal over, a few
    milliseconds after the listeners accept; a HUP sent in that window reloads nothing."""
    with POP3Raw(HOST, srv.plain) as c:
        c.ok("QUIT")
    time.sleep(0.3)


def test_sighup_right_after_start_does_not_kill_the_server(postie, tmp_path, pki):
    """SIGHUP means "reload"; once the server accepts connections it must never terminate on it
    (a `systemctl reload` or a certificate-renewal hook right after start)."""

    passwd = make_passwd(tmp_path).path
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    pki.a.install(cert, key)
    deaths = []
    for i in range(3):
        port = free_port()
        s = postie.make(passwd=passwd, maildir=str(tmp_path / "mail" / "%u"), listen=[(HOST, port)],
                        extra=["--tls-cert", str(cert), "--tls-key", str(key)], name=f"hup{i}")
        s.listens = []  # start() must not wait: we watch for the moment the listener is up
        s.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and s.alive():
            # the last line the server logs at startup: listeners bound, users loaded
            if "Info: loaded 2 users" in s.log_text():
                break
            time.sleep(0.001)
        # The server has logged that it listens and loaded its users: SIGHUP now means "reload".
        s.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        if not s.alive():
            deaths.append(f"run {i}: exit status {s.proc.returncode}")
        s.stop()
    assert not deaths, ("SIGHUP sent right after the server logged its startup (listening, users loaded) killed it "
                        "(the default disposition of SIGHUP is to terminate): " + "; ".join(deaths))


def test_sighup_with_broken_certificate_keeps_the_old_one(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=True)
    hup_ready(srv)
    srv.key.write_text("not a key\n")
    srv.hup()
    srv.server.wait_log(r"SIGHUP: (?:.*; )?kept the old TLS certificates")
    assert srv.server.alive(), "the server died on a broken certificate reload"
    with POP3Raw(HOST, srv.tls, tls=client_context(pki.cafile)) as c:
        assert cert_serial(c.peercert()) == pki.a.serial
        c.ok("QUIT")


# --------------------------------------------------------------------------
# 10. SNI chooses the certificate
# --------------------------------------------------------------------------


def test_sni_selects_certificate(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki,
                           extra=["--tls-sni", f"other.test={pki.other.cert}:{pki.other.key}"])
    verifying = client_context(pki.cafile)
    unchecked = client_context(pki.cafile, check_hostname=False)
    cases = [
        ("other.test", verifying, pki.other),
        ("localhost", verifying, pki.a),
        ("unknown.test", unchecked, pki.a),
        (None, unchecked, pki.a),  # no SNI at all
    ]
    for name, ctx, want in cases:
        for mode in ("implicit", "STLS"):
            if mode == "implicit":
                c = POP3Raw(HOST, srv.tls, tls=ctx, server_hostname=name)
            else:
                c = POP3Raw(HOST, srv.plain)
                c.ok("STLS")
                c.starttls(ctx, server_hostname=name)
            with c:
                got = c.peercert()
                assert cert_serial(got) == want.serial, (
                    f"{mode}, SNI {name!r}: got certificate {cert_cn(got)!r} ({cert_serial(got):#x}), "
                    f"want {want.cn!r} ({want.serial:#x})")
                c.login(*ALICE)
                c.ok("QUIT")
    # s_client too (-servername sends SNI; -noservername sends none).
    r = s_client(["-connect", f"{HOST}:{srv.tls}", "-servername", "other.test", "-CAfile", pki.cafile,
                  "-verify_return_error", "-verify_hostname", "other.test"])
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0 and "CN = other.test" in out, f"s_client SNI other.test: {s_client_summary(r)}"


def test_rsa_certificate_signs_every_scheme_a_client_asks_for(postie, tmp_path, pki):
    """An RSA key signs its handshakes with the system's OpenSSL (ServerKit's SystemRSAKey) and
    an ECDSA key chosen by SNI beside it with BoringSSL: s_client, allowed one signature scheme
    at a time, verifies every RSA-PSS and PKCS #1 scheme of TLS 1.3 and 1.2, and Python's ssl
    logs in over both versions."""
    rsa = pki.ca.leaf("server-rsa", "postie-rsa.test", ["DNS:localhost", "IP:127.0.0.1"], 0x3001, rsa=True)
    rsa.install(tmp_path / "server-cert.pem", tmp_path / "server-key.pem")
    srv = start_tls_server(postie, tmp_path, pki,
                           extra=["--tls-sni", f"other.test={pki.other.cert}:{pki.other.key}"])
    verify = ["-CAfile", pki.cafile, "-verify_return_error", "-crlf", "-ign_eof"]  # reads the replies to QUIT
    cases = [("-tls1_3", scheme, "RSA-PSS") for scheme in ("rsa_pss_rsae_sha256", "rsa_pss_rsae_sha384", "rsa_pss_rsae_sha512")]
    cases += [("-tls1_2", scheme, "RSA") for scheme in ("RSA+SHA256", "RSA+SHA384", "RSA+SHA512")]
    cases += [("-tls1_2", "RSA-PSS+SHA256", "RSA-PSS")]
    for version, scheme, kind in cases:
        for mode, base in (("implicit", ["-connect", f"{HOST}:{srv.tls}"]),
                           ("STLS", ["-connect", f"{HOST}:{srv.plain}", "-starttls", "pop3"])):
            r = s_client(base + [version, "-sigalgs", scheme] + verify, stdin=b"QUIT\n")
            out = r.stdout.decode(errors="replace")
            assert r.returncode == 0 and f"Peer signature type: {kind}\n" in out and "CN = postie-rsa.test" in out, (
                f"{mode} {version} {scheme}: {s_client_summary(r)}")
            assert "+OK" in out, f"{mode} {version} {scheme}: no POP3 reply after the handshake: {out[-300:]!r}"
    r = s_client(["-connect", f"{HOST}:{srv.tls}", "-servername", "other.test", "-sigalgs", "ECDSA+SHA256"] + verify,
                 stdin=b"QUIT\n")
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0 and "Peer signature type: ECDSA" in out and "CN = other.test" in out, (
        f"SNI other.test: {s_client_summary(r)}")
    for v, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        with POP3Raw(HOST, srv.tls, tls=client_context(pki.cafile, minimum=v, maximum=v)) as c:
            assert c.version == name and cert_serial(c.peercert()) == 0x3001
            c.login(*ALICE)
            c.ok("QUIT")


def test_rsa_and_ecdsa_certificates_at_once(postie, tmp_path, pki):
    """An RSA certificate (tls_cert) and an ECDSA one for the same names (tls_alt_cert, as
    Dovecot's ssl_alt_cert): s_client gets the ECDSA certificate when it accepts ECDSA, even
    beside RSA, and the RSA one when it accepts only RSA or offers only ECDHE-RSA suites, over
    implicit TLS and STLS, TLS 1.3 and 1.2; curl logs in."""
    rsa = pki.ca.leaf("server-rsa", "postie-rsa.test", ["DNS:localhost", "IP:127.0.0.1"], 0x3101, rsa=True)
    rsa.install(tmp_path / "server-cert.pem", tmp_path / "server-key.pem")
    ec = pki.ca.leaf("server-ec", "postie-ec.test", ["DNS:localhost", "IP:127.0.0.1"], 0x3102)
    srv = start_tls_server(postie, tmp_path, pki, extra=["--tls-alt-cert", str(ec.cert), "--tls-alt-key", str(ec.key)])
    verify = ["-CAfile", pki.cafile, "-verify_return_error", "-crlf", "-ign_eof"]
    cases = [
        ("-tls1_3", ["-sigalgs", "rsa_pss_rsae_sha256:ecdsa_secp256r1_sha256"], "ECDSA", "postie-ec.test"),
        ("-tls1_3", ["-sigalgs", "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384"], "RSA-PSS", "postie-rsa.test"),
        ("-tls1_2", [], "ECDSA", "postie-ec.test"),
        ("-tls1_2", ["-sigalgs", "RSA+SHA256:RSA-PSS+SHA256"], "RSA", "postie-rsa.test"),
        ("-tls1_2", ["-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], "RSA", "postie-rsa.test"),
    ]
    for version, options, kind, cn in cases:
        for mode, base in (("implicit", ["-connect", f"{HOST}:{srv.tls}"]),
                           ("STLS", ["-connect", f"{HOST}:{srv.plain}", "-starttls", "pop3"])):
            r = s_client(base + [version] + options + verify, stdin=b"QUIT\n")
            out = r.stdout.decode(errors="replace")
            assert r.returncode == 0 and f"Peer signature type: {kind}" in out and f"CN = {cn}" in out, (
                f"{mode} {version} {options}: {s_client_summary(r)}")
            assert "+OK" in out, f"{mode} {version} {options}: no POP3 reply after the handshake: {out[-300:]!r}"
    r = curl(["--cacert", str(pki.cafile), "-u", f"{ALICE[0]}:{ALICE[1]}", f"pop3s://{HOST}:{srv.tls}/"])
    assert r.returncode == 0, r.stderr


def test_tls_1_2_offers_only_forward_secret_aead_suites(postie, tmp_path, pki):
    """TLS 1.2: ECDHE with AES-GCM or ChaCha20-Poly1305 only; RSA key exchange and CBC are refused.
    (Cipher strings cover both ECDSA and RSA certificates.)"""
    srv = start_tls_server(postie, tmp_path, pki)
    base = ["-connect", f"{HOST}:{srv.tls}", "-tls1_2", "-CAfile", pki.cafile]
    for suites in ("ECDHE+AESGCM", "ECDHE+CHACHA20"):
        r = s_client(base + ["-cipher", suites])
        assert negotiated_protocol(r) == "TLSv1.2", f"{suites} should work: {s_client_summary(r)}"
    refused = {
        "RSA key exchange": "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA",
        "CBC with ECDHE": "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA",
        "finite-field DHE": "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384",
    }
    for label, suites in refused.items():
        r = s_client(base + ["-cipher", suites])
        assert negotiated_protocol(r) is None and r.returncode != 0, f"{label} was accepted: {s_client_summary(r)}"
