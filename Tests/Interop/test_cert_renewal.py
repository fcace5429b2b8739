"""Certificates that renew themselves: the server notices new `--tls-cert`/`--tls-key`/
`--tls-sni` files (renamed into place, or certbot's live/ links moved into archive/) and serves
them to new connections within 5 s without a signal; a certificate with the wrong key is
refused, logged once, and the old certificate keeps serving; `pop3_tls_certificate_expiry_seconds`
counts down to each certificate's notAfter. Certificates are made with `openssl`."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from kits.launcher import HOST, free_port
from kits.mail import ALICE, make_passwd
from kits.metrics import scrape, wait_metrics
from kits.pop3 import POP3Raw
from kits.report import note
from kits.tls import client_context, start_tls_server

# The promise: new connections see a renewed certificate within 5 s.
PROMISE = 5.0
# How long a test waits before it calls the server too slow (the assertion is on PROMISE).
PATIENCE = 15.0


def fingerprint(path: Path) -> str:
    """SHA-256 of the first (leaf) certificate in a PEM file."""
    return hashlib.sha256(x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)).hexdigest()


def served(port: int, server_name: str | None = "localhost") -> str:
    """SHA-256 of the certificate a new implicit-TLS connection gets (no verification: the
    fingerprint is what is compared)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def wait_served(port: int, want: str, since: float, server_name: str | None = "localhost") -> tuple[float, int]:
    """Handshakes until `want` is served or PATIENCE passes: (seconds since `since`, handshakes)."""
    n = 0
    while True:
        got = served(port, server_name)
        n += 1
        if got == want:
            return time.monotonic() - since, n
        assert time.monotonic() - since < PATIENCE, (
            f"after {PATIENCE:.0f} s ({n} handshakes) new connections still get {got[:16]}…, not the renewed {want[:16]}…")
        time.sleep(0.05)


def rename_into_place(src: Path, dst: Path) -> None:
    """As certbot's deploy hooks and most tools do: write a temporary file beside, then rename."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o600)
    os.rename(tmp, dst)


def test_renamed_files_are_served_within_5_s_without_a_signal(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki)
    old, new = fingerprint(pki.a.cert), fingerprint(pki.b.cert)
    assert served(srv.tls) == old
    # A session opened before the renewal goes on with the certificate it negotiated.
    ctx = client_context(pki.cafile)
    before = POP3Raw(HOST, srv.tls, tls=ctx)
    before.login(*ALICE)

    rename_into_place(pki.b.cert, srv.cert)
    rename_into_place(pki.b.key, srv.key)
    renamed = time.monotonic()
    delay, tries = wait_served(srv.tls, new, renamed)
    note(f"certificate renewal (renamed into place): new connections got the new certificate "
         f"{delay:.2f} s after the rename ({tries} handshakes), promised within {PROMISE:.0f} s")
    assert delay <= PROMISE, f"the renewed certificate was served {delay:.2f} s after the rename, promised {PROMISE} s"
    srv.server.wait_log(r"master: Info: TLS certificates reloaded: .*server-cert\.pem", timeout=5)
    assert not srv.server.log_lines("SIGHUP"), "no signal was sent, yet the log speaks of one"

    # STLS uses the same certificates.
    with POP3Raw(HOST, srv.plain) as c:
        c.ok("STLS")
        c.starttls(ctx)
        assert hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest() == new
        c.ok("QUIT")
    # The old session is untouched.
    assert hashlib.sha256(before.sock.getpeercert(binary_form=True)).hexdigest() == old
    assert before.cmd("STAT").startswith("+OK")
    assert before.cmd("QUIT").startswith("+OK")
    before.close()
    assert srv.server.alive()


def test_certbot_links_moved_to_new_archive_files_are_served(postie, tmp_path, pki):
    """certbot keeps archive/NAME/cert1.pem, privkey1.pem… and points live/NAME/*.pem at the
    newest; a renewal writes cert2.pem and moves each link (unlink, then symlink)."""
    archive, live = tmp_path / "archive", tmp_path / "live"
    archive.mkdir()
    live.mkdir()
    for i, leaf in ((1, pki.a), (2, pki.b)):
        shutil.copyfile(leaf.cert, archive / f"fullchain{i}.pem")
        shutil.copyfile(leaf.key, archive / f"privkey{i}.pem")
    (live / "fullchain.pem").symlink_to("../archive/fullchain1.pem")
    (live / "privkey.pem").symlink_to("../archive/privkey1.pem")
    port = free_port()
    s = postie.make(passwd=make_passwd(tmp_path).path, maildir=str(tmp_path / "mail" / "%u"), listen=[(HOST, free_port())],
                    extra=["--tls-cert", str(live / "fullchain.pem"), "--tls-key", str(live / "privkey.pem"),
                           "--listen-tls", f"{HOST}:{port}"], name="certbot")
    s.start(ready_timeout=15)
    s.wait_log(rf"Listening on 127\.0\.0\.1:{port} ", timeout=10)
    assert served(port) == fingerprint(pki.a.cert)

    for name in ("fullchain", "privkey"):
        link = live / f"{name}.pem"
        link.unlink()
        link.symlink_to(f"../archive/{name}2.pem")
    moved = time.monotonic()
    delay, tries = wait_served(port, fingerprint(pki.b.cert), moved)
    note(f"certificate renewal (certbot links moved): new connections got the new certificate "
         f"{delay:.2f} s after the links moved ({tries} handshakes)")
    assert delay <= PROMISE, f"the renewed certificate was served {delay:.2f} s after the links moved, promised {PROMISE} s"


def test_a_certificate_with_the_wrong_key_is_refused_and_the_old_one_keeps_serving(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki)
    old = fingerprint(pki.a.cert)
    # The new certificate arrives with somebody else's key.
    rename_into_place(pki.b.cert, srv.cert)
    rename_into_place(pki.other.key, srv.key)
    lines = srv.server.wait_log(r"master: Error: .*kept the old TLS certificates", timeout=PATIENCE)
    assert "cannot be used together" in lines[0], f"the log does not say why: {lines[0]}"
    assert served(srv.tls) == old
    # Logged once per change, not at every poll.
    time.sleep(3)
    assert len(srv.server.log_lines("kept the old TLS certificates")) == 1, srv.server.log_tail(20)
    assert served(srv.tls) == old
    with POP3Raw(HOST, srv.tls, tls=client_context(pki.cafile)) as c:
        c.login(*ALICE)
        c.ok("QUIT")

    # The right key follows: now the pair is loaded.
    rename_into_place(pki.b.key, srv.key)
    delay, _ = wait_served(srv.tls, fingerprint(pki.b.cert), time.monotonic())
    assert delay <= PROMISE, f"the fixed pair was served {delay:.2f} s after the key arrived"
    assert srv.server.alive()


def test_an_sni_certificate_renews_itself_and_a_broken_one_is_refused(postie, tmp_path, pki):
    sni_cert, sni_key = tmp_path / "other.pem", tmp_path / "other.key"
    shutil.copyfile(pki.other.cert, sni_cert)
    shutil.copyfile(pki.other.key, sni_key)
    srv = start_tls_server(postie, tmp_path, pki, extra=["--tls-sni", f"other.test={sni_cert}:{sni_key}"])
    assert served(srv.tls, "other.test") == fingerprint(pki.other.cert)
    # An SNI pair that does not match is refused too (it would fail every handshake for that name).
    rename_into_place(pki.a.cert, sni_cert)
    srv.server.wait_log(r"master: Error: .*other\.pem changed, but kept the old TLS certificates.*cannot be used together",
                        timeout=PATIENCE)
    assert served(srv.tls, "other.test") == fingerprint(pki.other.cert)
    # A renewed SNI certificate (another name's cert and key, standing in for a renewal).
    renewed = pki.ca.leaf("other-renewed", "other.test", ["DNS:other.test"], 0x2002)
    rename_into_place(renewed.cert, sni_cert)
    rename_into_place(renewed.key, sni_key)
    delay, _ = wait_served(srv.tls, fingerprint(renewed.cert), time.monotonic(), "other.test")
    assert delay <= PROMISE
    assert served(srv.tls, "localhost") == fingerprint(pki.a.cert)


# --------------------------------------------------------------------------
# The expiry gauge
# --------------------------------------------------------------------------


def not_after(path: Path) -> int:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return int(cert.not_valid_after_utc.timestamp())


def test_expiry_gauge_counts_down_to_each_certificates_not_after(postie, tmp_path, pki):
    # The default certificate: 30 days (pki.a). An SNI one that expired two days ago.
    expired = pki.ca.expired_leaf("expired-sni", "old.test", ["DNS:old.test"], 0x3001)
    sni_cert, sni_key = tmp_path / "old.pem", tmp_path / "old.key"
    shutil.copyfile(expired.cert, sni_cert)
    shutil.copyfile(expired.key, sni_key)
    mport = free_port()
    srv = start_tls_server(postie, tmp_path, pki, name="expiry",
                           extra=["--metrics", f"{HOST}:{mport}", "--tls-sni", f"old.test,*.old.test={sni_cert}:{sni_key}"])
    sc = wait_metrics(mport, lambda sc: True)
    assert sc.types.get("pop3_tls_certificate_expiry_seconds") == "gauge", sc.text
    now = time.time()
    want = {
        (str(srv.cert), "default"): not_after(srv.cert) - now,
        (str(sni_cert), "old.test,*.old.test"): not_after(sni_cert) - now,
    }
    got = {(dict(l)["certificate"], dict(l)["server_names"]): v
           for l, v in sc.series("pop3_tls_certificate_expiry_seconds").items()}
    assert set(got) == set(want), f"series {sorted(got)}, want {sorted(want)}"
    for k, w in want.items():
        assert abs(got[k] - w) <= 60, f"{k}: {got[k]:.0f} s left, want {w:.0f} (±60)"
    assert got[(str(sni_cert), "old.test,*.old.test")] < -86400, "an expired certificate has negative time left"
    # It counts down between scrapes, without a reload.
    time.sleep(2.1)
    later = scrape(mport).get("pop3_tls_certificate_expiry_seconds", certificate=str(srv.cert), server_names="default")
    assert got[(str(srv.cert), "default")] - later >= 2, f"{got[(str(srv.cert), 'default')]} then {later}"

    # A renewal is picked up by the gauge too: a certificate valid for 20 days.
    ca = pki.ca
    renewed = ca.leaf("renewed-20d", "postie-a.test", ["DNS:localhost", "IP:127.0.0.1"], 0x1003, days=20)
    rename_into_place(renewed.cert, srv.cert)
    rename_into_place(renewed.key, srv.key)
    w = not_after(renewed.cert)
    sc = wait_metrics(mport, lambda sc: abs(sc.get("pop3_tls_certificate_expiry_seconds", certificate=str(srv.cert),
                                                   server_names="default") - (w - time.time())) <= 60, timeout=PATIENCE)
    got = sc.get("pop3_tls_certificate_expiry_seconds", certificate=str(srv.cert), server_names="default")
    assert abs(got - (w - time.time())) <= 60, f"after the renewal: {got:.0f} s left, want {w - time.time():.0f}"
    assert sc.get("pop3_tls_certificate_expiry_timestamp_seconds") == not_after(sni_cert)


# --------------------------------------------------------------------------
# After --run-as
# --------------------------------------------------------------------------


def test_after_run_as_readable_files_renew_and_unreadable_ones_are_reported_at_start(postie, tmp_path, pki):
    """The files are first read as root. Readable by the run_as user (certbot's
    `--deploy-hook` can chgrp them), a renewal is loaded as usual; in a directory closed to
    that user (certbot's archive/ is 0700 root), the server says so at start, not at the first
    renewal, and logs no error meanwhile."""
    import tempfile
    from test_run_as import RUN_AS_USER, ensure_user

    assert os.geteuid() == 0, "this test starts the server as root"
    user = ensure_user(RUN_AS_USER)
    base = Path(tempfile.mkdtemp(prefix="postie-renew-"))
    try:
        os.chmod(base, 0o755)
        passwd = make_passwd(base).path
        os.chown(passwd, user.pw_uid, user.pw_gid)

        def install(leaf, cert, key):
            for src, dst, mode in ((leaf.cert, cert, 0o644), (leaf.key, key, 0o640)):
                tmp = dst.with_name(dst.name + ".tmp")
                shutil.copyfile(src, tmp)
                os.chown(tmp, 0, user.pw_gid)
                os.chmod(tmp, mode)
                os.rename(tmp, dst)

        def start(directory: Path, name: str):
            cert, key = directory / "fullchain.pem", directory / "privkey.pem"
            install(pki.a, cert, key)
            port = free_port()
            s = postie.make(passwd=passwd, maildir=str(base / "mail" / "%u"), listen=[(HOST, free_port())],
                            extra=["--run-as", RUN_AS_USER, "--tls-cert", str(cert), "--tls-key", str(key),
                                   "--listen-tls", f"{HOST}:{port}"], name=name)
            s.start(ready_timeout=15)
            s.wait_log(rf"Listening on 127\.0\.0\.1:{port} ", timeout=10)
            s.wait_log(r"Running as ", timeout=10)
            return s, port, cert, key

        # Closed to the user: said once at start; no error, and the certificate still serves.
        closed = base / "closed"
        closed.mkdir(mode=0o700)
        s, port, cert, key = start(closed, "renew-closed")
        warning = s.wait_log(r"master: Warning: .*cannot be read by uid", timeout=PATIENCE)[0]
        assert str(cert) in warning and str(key) in warning, warning
        time.sleep(3)  # three polls
        assert not s.log_lines(r": Error: "), s.log_tail(20)
        assert served(port) == fingerprint(pki.a.cert)
        s.stop()

        # Readable by the user's group: a renewal is loaded.
        shared = base / "shared"
        shared.mkdir(mode=0o750)
        os.chown(shared, 0, user.pw_gid)
        s, port, cert, key = start(shared, "renew-shared")
        assert served(port) == fingerprint(pki.a.cert)
        install(pki.b, cert, key)
        delay, _ = wait_served(port, fingerprint(pki.b.cert), time.monotonic())
        assert delay <= PROMISE, f"as {RUN_AS_USER}, the renewed certificate was served {delay:.2f} s after the rename"
        assert not s.log_lines("cannot be read by uid") and not s.log_lines(r": Error: "), s.log_tail(20)
        s.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
