"""`postie bench` against Dovecot (Debian's dovecot-pop3d) and against `postie serve`.

The issue's must-show item 4: bench runs against both and prints the same figures for both.
Timings are printed, never asserted.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
from pathlib import Path

from conftest import note
from kits.mail import Maildir, numbered_message, PasswdFile
from kits.launcher import free_port
from kits.tls import make_pki

HOST = "127.0.0.1"
USERS = {f"load{i}": f"pw-load{i}" for i in range(4)}
MESSAGES = 6


def fill(maildir, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(MESSAGES):
        maildir.deliver(numbered_message(i, rng, size=8000))


def credentials(tmp: Path) -> Path:
    p = tmp / "credentials"
    p.write_text("# user:password\n" + "".join(f"{u}:{pw}\n" for u, pw in USERS.items()))
    return p


def bench(postie_bin: Path, args: list[str], json_out: bool = True, timeout: float = 120):
    r = subprocess.run([str(postie_bin), "bench", *args] + (["--json"] if json_out else []),
                       capture_output=True, timeout=timeout)
    out = r.stdout.decode(errors="replace")
    return r.returncode, (json.loads(out) if json_out and out.strip() else out), r.stderr.decode(errors="replace")


FIGURES = {"sessions", "failed_sessions", "stalled_sessions", "sessions_per_second", "sessions_per_second_after_ramp_up",
           "megabytes", "megabytes_per_second", "messages_retrieved", "messages_deleted", "errors",
           "session_latency_ms", "steps", "elapsed_seconds"}
STEPS = ["connect", "login", "stat", "uidl", "retr", "quit"]


def check_report(doc: dict, tls: str) -> None:
    assert FIGURES <= set(doc), set(doc) ^ FIGURES
    assert doc["sessions"] > 0 and doc["failed_sessions"] == 0, doc
    assert doc["errors"] == {}, doc["errors"]
    steps = [s["step"] for s in doc["steps"]]
    want = STEPS[:1] + (["stls"] if tls == "starttls" else []) + STEPS[1:]
    assert steps == want, steps
    lat = doc["session_latency_ms"]
    assert lat["count"] == doc["sessions"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], lat
    retr = next(s for s in doc["steps"] if s["step"] == "retr")["latency_ms"]
    assert retr["count"] == doc["messages_retrieved"] == doc["sessions"] * 2
    assert doc["megabytes"] > 0


def test_bench_same_figures_for_dovecot_and_postie(dovecot, postie, postie_bin, tmp_path):
    pki = make_pki(tmp_path / "pki")
    d = dovecot(USERS, cert=pki.a.cert, key=pki.a.key)
    for i, u in enumerate(USERS):
        fill(d.maildir(u), i)
    d.fix_ownership()
    # Postie serves its own copies of the same mailboxes, with Dovecot's passwd-file.
    mail = tmp_path / "postie-mail"
    for i, u in enumerate(USERS):
        fill(Maildir(mail / u), i)
    s = postie.start(passwd=d.passwd_path, maildir=str(mail / "%u"),
                     extra=["--tls-cert", str(pki.a.cert), "--tls-key", str(pki.a.key)])
    creds = credentials(tmp_path)
    common = ["--credentials", str(creds), "--clients", "4", "--duration", "3", "--ramp-up", "1", "--retr", "2"]

    reports = {}
    for name, port in (("dovecot", d.port), ("postie", s.port)):
        code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{port}", *common])
        assert code == 0, err
        check_report(doc, "none")
        reports[name] = doc
    assert set(reports["dovecot"]) == set(reports["postie"])
    for name in reports:
        r = reports[name]
        note(f"bench vs {name} (debug build, 4 clients): {r['sessions_per_second']:.1f} sessions/s, {r['megabytes_per_second']:.2f} MB/s, "
              f"session p50 {r['session_latency_ms']['p50']} ms p99 {r['session_latency_ms']['p99']} ms")

    # The text report has the same lines, in the same order, for both servers.
    shapes = []
    for port in (d.port, s.port):
        code, text, err = bench(postie_bin, ["--server", f"{HOST}:{port}", *common[:-4], "--duration", "1", "--retr", "1"],
                                json_out=False)
        assert code == 0, err
        print(text)
        shapes.append([line.split()[0] for line in text.splitlines()])
    assert shapes[0] == shapes[1]
    assert shapes[0][:5] == ["postie", "sessions", "rate", "errors", "latency"]
    assert "session" in shapes[0] and "retr" in shapes[0]

    # STLS and implicit TLS (verified against the test CA), against both.
    for name, port, tls_port in (("dovecot", d.port, d.tls_port), ("postie", s.port, None)):
        code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{port}", "--tls", "starttls", "--ca-file", str(pki.cafile),
                                            *common[:-6], "--duration", "2", "--retr", "2"])
        assert code == 0, err
        check_report(doc, "starttls")
    code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{d.tls_port}", "--tls", "implicit", "--ca-file", str(pki.cafile),
                                        *common[:-6], "--duration", "2", "--retr", "2"])
    assert code == 0, err
    check_report(doc, "implicit")
    code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{d.port}", "--tls-port", str(d.tls_port), "--tls", "mix",
                                        "--ca-file", str(pki.cafile), *common[:-6], "--duration", "2", "--retr", "2"])
    assert code == 0, err
    assert doc["sessions"] > 0 and doc["failed_sessions"] == 0, doc
    assert [x["step"] for x in doc["steps"]][:2] == ["connect", "stls"]


def serve_users(postie, tmp_path: Path, extra: list[str] | None = None):
    """`postie serve` with USERS in a passwd-file and their filled Maildirs under tmp_path/mail."""
    pw = PasswdFile(tmp_path / "passwd")
    for u, p in USERS.items():
        pw.add(u, p, scheme="PLAIN")
    pw.write()
    mail = tmp_path / "mail"
    for i, u in enumerate(USERS):
        fill(Maildir(mail / u), i)
    return postie.start(passwd=pw.path, maildir=str(mail / "%u"), extra=extra or [])


def test_bench_delete_share_deletes_on_the_server(postie, postie_bin, tmp_path):
    s = serve_users(postie, tmp_path)
    mail = tmp_path / "mail"
    code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{s.port}", "--credentials", str(credentials(tmp_path)),
                                        "--clients", "4", "--duration", "2", "--retr", "1", "--delete-share", "0.5"])
    assert code == 0, err
    assert doc["messages_deleted"] > 0
    left = sum(len(Maildir(mail / u).message_files()) for u in USERS)
    assert left == len(USERS) * MESSAGES - doc["messages_deleted"]
    assert "dele" in [x["step"] for x in doc["steps"]]


def test_bench_counts_errors_by_kind_and_stalled_sessions(postie_bin, tmp_path, env):
    # Wrong passwords: every session fails at login, counted as "auth".
    bad = tmp_path / "bad"
    bad.write_text("alice:wrong\n")
    code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{env.port}", "--credentials", str(bad), "--clients", "1",
                                        "--duration", "1", "--retr", "1"])
    assert code == 1
    assert doc["sessions"] == 0 and doc["failed_sessions"] >= 1 and set(doc["errors"]) == {"auth"}, doc

    # A server that accepts connections but never greets: sessions stall.
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(64)
    try:
        code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{silent.getsockname()[1]}", "--credentials", str(bad),
                                            "--clients", "2", "--duration", "1", "--retr", "1", "--stall-after", "1"])
    finally:
        silent.close()
    assert code == 1
    assert doc["stalled_sessions"] >= 2 and doc["errors"].get("stalled", 0) == doc["stalled_sessions"], doc


def test_bench_verifies_certificates_unless_told_not_to(postie, postie_bin, tmp_path):
    """The test accounts' passwords follow the handshake, so bench verifies the certificate as
    fetch and check do: a CA it does not know is a "tls" error before any password is sent,
    --ca-file trusts the test CA (by address and by host name), --insecure accepts anything."""
    pki = make_pki(tmp_path / "pki")
    s = serve_users(postie, tmp_path, extra=["--tls-cert", str(pki.a.cert), "--tls-key", str(pki.a.key)])
    common = ["--tls", "starttls", "--credentials", str(credentials(tmp_path)), "--clients", "2", "--duration", "1",
              "--retr", "2"]

    code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{s.port}", *common])
    assert code == 1, (doc, err)
    assert doc["sessions"] == 0 and set(doc["errors"]) == {"tls"}, doc
    assert "Login: " not in s.log_text(), "a password was sent to an unverified server"

    for server in (f"{HOST}:{s.port}", f"localhost:{s.port}"):
        code, doc, err = bench(postie_bin, ["--server", server, "--ca-file", str(pki.cafile), *common])
        assert code == 0, (server, err)
        check_report(doc, "starttls")

    code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{s.port}", "--insecure", *common])
    assert code == 0, err
    check_report(doc, "starttls")

    r = subprocess.run([str(postie_bin), "bench", "--server", f"{HOST}:{s.port}", "--insecure", "--ca-file",
                        str(pki.cafile), *common], capture_output=True, timeout=60)
    assert r.returncode == 64 and b"--insecure" in r.stderr, r


def test_bench_resume_offers_each_clients_last_session(dovecot, postie, postie_bin, tmp_path):
    """--resume: every client keeps the session the server last gave it and offers it on its next
    connection (OpenSSL on the client side). Against Postie every handshake after a client's first
    is abbreviated. Dovecot keeps sessions per login process, so it resumes some only when its
    login processes serve many connections each (its high-performance mode, as bench/harness.py
    runs it); a new process per connection, its default, resumes none. Without --resume no
    handshake is resumed."""
    pki = make_pki(tmp_path / "pki")
    d = dovecot(USERS, cert=pki.a.cert, key=pki.a.key,
                extra_conf="service pop3-login {\n  service_count = 0\n  process_min_avail = 2\n}\n")
    for i, u in enumerate(USERS):
        fill(d.maildir(u), i)
    d.fix_ownership()
    tls_port = free_port()
    s = serve_users(postie, tmp_path, extra=["--tls-cert", str(pki.a.cert), "--tls-key", str(pki.a.key),
                                             "--listen-tls", f"{HOST}:{tls_port}"])
    clients = 2
    common = ["--ca-file", str(pki.cafile), "--credentials", str(credentials(tmp_path)), "--clients", str(clients),
              "--duration", "2", "--retr", "2"]
    targets = {"postie": (f"{HOST}:{s.port}", f"{HOST}:{tls_port}"), "dovecot": (f"{HOST}:{d.port}", f"{HOST}:{d.tls_port}")}
    for name, (plain, implicit) in targets.items():
        for tls, server in (("starttls", plain), ("implicit", implicit)):
            code, doc, err = bench(postie_bin, ["--server", server, "--tls", tls, "--resume", *common])
            assert code == 0, err
            check_report(doc, tls)
            assert doc["resume"] is True
            assert doc["tls_handshakes"] == doc["sessions"], doc
            note(f"bench --resume --tls {tls} vs {name}: {doc['resumed_handshakes']} of {doc['tls_handshakes']} "
                 f"handshakes resumed, {doc['sessions_per_second']:.1f} sessions/s (debug build)")
            if name == "postie":
                assert doc["resumed_handshakes"] == doc["tls_handshakes"] - clients, doc
            else:
                assert doc["resumed_handshakes"] > 0, doc

            code, doc, err = bench(postie_bin, ["--server", server, "--tls", tls, *common])
            assert code == 0, err
            assert doc["resume"] is False and doc["resumed_handshakes"] == 0 and doc["tls_handshakes"] == doc["sessions"], doc

    # The OpenSSL client verifies as the default one does: a CA it does not know is a "tls"
    # error before any password is sent; a host name is checked as well as an address.
    code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{tls_port}", "--tls", "implicit", "--resume",
                                        *common[2:]])
    assert code == 1 and set(doc["errors"]) == {"tls"}, (doc, err)
    code, doc, err = bench(postie_bin, ["--server", f"localhost:{tls_port}", "--tls", "implicit", "--resume", *common])
    assert code == 0 and doc["resumed_handshakes"] > 0, (doc, err)
    code, doc, err = bench(postie_bin, ["--server", f"{HOST}:{tls_port}", "--tls", "implicit", "--resume",
                                        "--insecure", *common[2:]])
    assert code == 0 and doc["resumed_handshakes"] > 0, (doc, err)

    r = subprocess.run([str(postie_bin), "bench", "--server", f"{HOST}:{s.port}", "--resume", *common], capture_output=True,
                       timeout=60)
    assert r.returncode == 64 and b"--resume" in r.stderr, r
