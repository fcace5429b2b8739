"""The Prometheus endpoint (`postie serve --metrics`): a scripted sequence of sessions, then every
counter must equal exactly what the script did (the text format is parsed strictly by
kits/metrics.py); a second server with a low lockout threshold checks the lockout counters; a
TLS server checks the STLS, implicit-TLS and handshake-failure counters and the
certificate-expiry gauge (also after SIGHUP).
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kits.launcher import free_port, HOST, LOCKOUT_CONFIG
from kits.mail import canonical_crlf, Maildir, PasswdFile
from kits.metrics import E, QUICK_CONFIG, compare, fetch, start_metrics_server, wait_metrics
from kits.pop3 import POP3Raw, ProtocolError
from kits.tls import client_context, make_pki, start_tls_server
from kits.tools import run


# Command keywords the server counts under their own name; anything else is "unknown".
KNOWN_COMMANDS = {"USER", "PASS", "APOP", "AUTH", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP",
                  "RSET", "TOP", "UIDL", "CAPA", "STLS", "UTF8"}

LOCKED_OUT = "-ERR [SYS/TEMP] Too many failed logins from your IP address; try again later."


# --------------------------------------------------------------------------
# A POP3 client that counts what it does
# --------------------------------------------------------------------------


@dataclass
class Tally:
    connections: int = 0
    commands: Counter = field(default_factory=Counter)


class Client(POP3Raw):
    """POP3Raw that counts each command it sends under the label the server must use."""

    def __init__(self, tally: Tally, port: int, source: str | None = None, **kw):
        tally.connections += 1
        self.tally = tally
        super().__init__(HOST, port, source=source, **kw)

    def sendline(self, line) -> None:
        text = line.decode() if isinstance(line, bytes) else line
        words = text.split()
        kw = words[0].upper() if words else ""
        self.tally.commands[kw if kw in KNOWN_COMMANDS else "unknown"] += 1
        super().sendline(line)


# --------------------------------------------------------------------------
# a. Counters equal what the script did
# --------------------------------------------------------------------------

MSGS = {
    "alice": [
        b"From: a@example.org\nSubject: one\n\nfirst message\n",
        b"From: a@example.org\nSubject: two\n\n.leading dot\n..two dots\n.\nend\n",
        b"From: a@example.org\nSubject: three\nX-Long: " + b"x" * 300 + b"\n\nbody 1\nbody 2\nbody 3\n",
        b"From: a@example.org\nSubject: four\n\nno final newline",
    ],
    "bob": [
        b"From: b@example.org\nSubject: b1\n\n" + b"line of bob's mail\n" * 50,
        b"From: b@example.org\nSubject: b2\n\nshort\n",
    ],
    "carol": [b"From: c@example.org\nSubject: c1\n\nhello carol\n"],
}
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def test_metrics_count_exactly_what_the_clients_did(postie, tmp_path):
    for user, msgs in MSGS.items():
        md = Maildir(tmp_path / "mail" / user).create()
        for m in msgs:
            md.deliver(m)
    # 127.0.0.1 is trusted for plaintext logins, 127.0.0.9 is not.
    config = QUICK_CONFIG + 'trusted_networks: ["127.0.0.1/32"]\n'
    s, mport = start_metrics_server(postie, tmp_path, config, USERS)
    port = s.port
    listener = f"{HOST}:{port}"

    # Before any client: the readiness probe's connection only; every other counter 0.
    base = wait_metrics(mport, lambda sc: sc.get("pop3_connections_total", listener=listener, tls="none") == 1)
    assert base.get("pop3_connections_total", listener=listener, tls="none") == 1, base.text
    assert "pop3_tls_certificate_expiry_timestamp_seconds" not in base.types, \
        "a server without TLS exports a certificate expiry"
    for fam in ("pop3_logins_total", "pop3_commands_total", "pop3_sent_bytes_total", "pop3_messages_deleted_total",
                "pop3_connections_refused_total", "pop3_sessions_active"):
        assert all(v == 0 for v in base.series(fam).values()), f"{fam} not 0 at start: {base.series(fam)}"

    t = Tally()
    retr_bytes = top_bytes = 0
    deleted = 0
    logins_ok = 0
    failures = 0
    sessions_ended = 0
    t0 = time.monotonic()

    # S1: alice reads, tops, deletes two and commits.
    c = Client(t, port)
    c.login("alice", USERS["alice"])
    logins_ok += 1
    n, size = c.stat()
    assert n == 4
    sizes = {k: int(v) for k, v in c.listing("LIST").items()}
    c.listing("UIDL")
    assert sum(sizes.values()) == size
    for i in (1, 2):
        body = c.retr(i)
        assert body == canonical_crlf(MSGS["alice"][i - 1]) and len(body) == sizes[i]
        retr_bytes += len(body)
    top_bytes += len(c.top(3, 0))
    top_bytes += len(c.top(4, 2))
    c.ok("DELE 1")
    c.ok("DELE 2")
    c.ok("noop")  # keywords are case-insensitive: counted as NOOP
    assert c.cmd("XYZZY").startswith("-ERR")  # unknown
    r, caps = c.multi("CAPA")
    assert r.startswith("+OK")
    assert c.quit().startswith("+OK")
    c.close()
    deleted += 2
    sessions_ended += 1

    # S2: bob deletes one, RSET, deletes the other, commits one deletion.
    c = Client(t, port)
    c.login("bob", USERS["bob"])
    logins_ok += 1
    retr_bytes += len(c.retr(1))
    retr_bytes += len(c.retr(2))
    top_bytes += len(c.top(1, 1))
    c.ok("DELE 1")
    c.ok("RSET")
    c.ok("DELE 2")
    assert c.cmd("LAST").startswith("-ERR")  # RFC 1725's LAST is gone: unknown
    assert c.quit().startswith("+OK")
    c.close()
    deleted += 1
    sessions_ended += 1

    # S3: bob deletes and drops the connection: nothing is deleted, the session still ends.
    c = Client(t, port)
    c.login("bob", USERS["bob"])
    logins_ok += 1
    c.ok("DELE 1")
    c.abort()
    sessions_ended += 1

    # Four failed logins in two connections (wrong password, unknown user).
    c = Client(t, port)
    for user, pw in (("alice", "wrong"), ("nosuchuser", "whatever")):
        c.ok(f"USER {user}")
        assert c.cmd(f"PASS {pw}").startswith("-ERR [AUTH]")
        failures += 1
    c.quit()
    c.close()
    c = Client(t, port)
    assert c.cmd("HELO there").startswith("-ERR")  # unknown, before login
    for user, pw in (("bob", "wrong"), ("carol", "Carol-PW")):
        c.ok(f"USER {user}")
        assert c.cmd(f"PASS {pw}").startswith("-ERR [AUTH]")
        failures += 1
    c.quit()
    c.close()

    # S4: carol logs in and stays (the one open session) ...
    open_session = Client(t, port)
    open_session.login("carol", USERS["carol"])
    logins_ok += 1
    open_session.ok("STAT")
    # ... so her second session is refused [IN-USE].
    c = Client(t, port)
    c.ok("USER carol")
    r = c.cmd(f"PASS {USERS['carol']}")
    assert r.startswith("-ERR [IN-USE]"), r
    c.quit()
    c.close()

    # From an untrusted address, plaintext USER is refused.
    c = Client(t, port, source="127.0.0.9")
    r, caps = c.multi("CAPA")
    assert r.startswith("+OK") and b"USER" not in caps, caps
    r = c.cmd("USER alice")
    assert r.startswith("-ERR [AUTH] Plaintext authentication disallowed"), r
    c.quit()
    c.close()

    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= sessions_ended
                      and sc.get("pop3_sessions_active") <= 1)
    elapsed = time.monotonic() - t0
    expected = {
        E("pop3_connections_total", listener=listener, tls="none"): 1 + t.connections,
        E("pop3_logins_total", result="success", mechanism="USER", tls="no"): logins_ok,
        E("pop3_logins_total", result="failure", mechanism="USER", tls="no"): failures,
        E("pop3_logins_total", result="refused", mechanism="USER", tls="no"): 1,
        E("pop3_in_use_refusals_total"): 1,
        E("pop3_plaintext_refused_total"): 1,
        E("pop3_lockouts_total"): 0,
        E("pop3_sessions_active"): 1,
        E("pop3_sent_bytes_total", command="RETR"): retr_bytes,
        E("pop3_sent_bytes_total", command="TOP"): top_bytes,
        E("pop3_messages_deleted_total"): deleted,
        E("pop3_session_duration_seconds_count"): sessions_ended,
    }
    for kw, n in t.commands.items():
        expected[E("pop3_commands_total", command=kw)] = n
    bad = compare(sc, expected, ["pop3_connections_total", "pop3_logins_total", "pop3_commands_total",
                                 "pop3_sent_bytes_total", "pop3_connections_refused_total",
                                 "pop3_starttls_total", "pop3_tls_handshake_failures_total"])
    dsum = sc.get("pop3_session_duration_seconds_sum")
    if not (0 < dsum < elapsed + 1):
        bad.append(f"pop3_session_duration_seconds_sum = {dsum}, want between 0 and {elapsed:.2f}")
    # The buckets are cumulative: they never decrease, and +Inf holds every ended session.
    # (Which bucket a session falls in depends on the machine's speed, so none is named.)
    buckets = sorted((float(dict(l)["le"]), v) for (n_, l), v in sc.samples.items()
                     if n_ == "pop3_session_duration_seconds_bucket")
    counts = [v for _, v in buckets]
    if counts != sorted(counts) or not buckets or buckets[-1] != (float("inf"), sessions_ended):
        bad.append(f"session-duration buckets {buckets}: want non-decreasing counts ending at +Inf = {sessions_ended}")
    assert not bad, ("metrics differ from what the clients did:\n  " + "\n  ".join(bad)
                     + f"\nclient tally: {dict(t.commands)}, {t.connections} connections\n---\n{sc.text}")

    # Nothing but /metrics is served there.
    status, _, _ = fetch(mport, "/")
    assert status == 404, f"GET / on the metrics port: HTTP {status}"

    # Closing the open session brings the gauge back to 0 and adds its duration.
    open_session.quit()
    open_session.close()
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_sessions_active") == 0)
    assert sc.get("pop3_sessions_active") == 0
    assert sc.get("pop3_session_duration_seconds_count") == sessions_ended + 1
    assert sc.get("pop3_commands_total", command="QUIT") == t.commands["QUIT"]


def test_metrics_are_off_by_default(postie, tmp_path):
    pw = PasswdFile(tmp_path / "passwd").add("bob", "pw", scheme="PLAIN")
    pw.write()
    s = postie.start(passwd=pw.path, maildir=str(tmp_path / "mail" / "%u"))
    time.sleep(0.2)
    assert "Serving metrics" not in s.log_text(), f"a metrics endpoint without --metrics:\n{s.log_tail()}"


def test_login_mechanism_label_follows_the_method(postie, tmp_path):
    """pop3_logins_total{mechanism} is the method the log line names (method=USER, PLAIN, APOP)."""
    import base64
    import hashlib

    Maildir(tmp_path / "mail" / "bob").create().deliver(b"Subject: hi\n\nhi\n")
    s, mport = start_metrics_server(postie, tmp_path, QUICK_CONFIG, {"bob": "bob-pw"}, extra=["--apop"], name="mech")
    t = Tally()
    with Client(t, s.port) as c:
        c.login("bob", "bob-pw")
        c.quit()
    with Client(t, s.port) as c:
        assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0bob\0wrong").decode()).startswith("-ERR [AUTH]")
        c.ok("AUTH PLAIN " + base64.b64encode(b"\0bob\0bob-pw").decode())
        c.quit()
    with Client(t, s.port) as c:
        m = re.search(rb"<[^>]+>", c.greeting)
        assert m, f"no APOP timestamp in the greeting with --apop: {c.greeting!r}"
        c.ok("APOP bob " + hashlib.md5(m.group(0) + b"bob-pw").hexdigest())
        c.quit()
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 3)
    logged = Counter(re.findall(r"pop3-login: Info: (Login|Login failed): user=<bob>, method=(\w[\w-]*)", s.log_text()))
    assert logged == Counter({("Login", "USER"): 1, ("Login failed", "PLAIN"): 1, ("Login", "PLAIN"): 1,
                              ("Login", "APOP"): 1}), f"log lines: {logged}"
    expected = {
        E("pop3_logins_total", result="success", mechanism="USER", tls="no"): 1,
        E("pop3_logins_total", result="success", mechanism="PLAIN", tls="no"): 1,
        E("pop3_logins_total", result="failure", mechanism="PLAIN", tls="no"): 1,
        E("pop3_logins_total", result="success", mechanism="APOP", tls="no"): 1,
    }
    for kw, n in t.commands.items():
        expected[E("pop3_commands_total", command=kw)] = n
    bad = compare(sc, expected, ["pop3_logins_total", "pop3_commands_total"])
    assert not bad, "logins by mechanism differ from the log's method=:\n  " + "\n  ".join(bad) + "\n---\n" + sc.text


# --------------------------------------------------------------------------
# a'. Lockout counters
# --------------------------------------------------------------------------



def test_lockout_counters(postie, tmp_path):
    Maildir(tmp_path / "mail" / "alice").create().deliver(b"Subject: hi\n\nhi\n")
    s, mport = start_metrics_server(postie, tmp_path, LOCKOUT_CONFIG, {"alice": "alice-pw"}, name="lockout")
    port = s.port
    base = wait_metrics(mport, lambda sc: sc.get("pop3_connections_total", listener=f"{HOST}:{port}", tls="none") == 1)
    conns0 = base.get("pop3_connections_total", listener=f"{HOST}:{port}", tls="none")
    t = Tally()
    attacker = "127.0.0.5"
    # A second connection from the attacker, greeted before the lockout, waits.
    waiting = Client(t, port, source=attacker)
    assert waiting.greeting.startswith(b"+OK")
    # Three wrong passwords: the first two are answered [AUTH], the third (checked, wrong,
    # and counted as a failure) locks the address out and is answered with the lockout.
    c = Client(t, port, source=attacker)
    for k in range(3):
        c.ok("USER alice")
        r = c.cmd(f"PASS guess-{k}")
        if k < 2:
            assert r.startswith("-ERR [AUTH]"), f"wrong password {k + 1} of 3 got {r!r}"
        else:
            assert r == LOCKED_OUT, f"the wrong password that reaches lockout_threshold 3 got {r!r}"
    c.expect_closed()
    c.close()
    # The waiting connection is now refused even with the right password: a refused login.
    waiting.ok("USER alice")
    r = waiting.cmd("PASS alice-pw")
    assert r == LOCKED_OUT, f"the right password from a locked-out address got {r!r}"
    waiting.close()
    # New connections from the address are refused before the greeting.
    refused = 0
    for _ in range(2):
        c = Client(t, port, source=attacker, read_greeting=False)
        g = c.reply()
        assert g == LOCKED_OUT, f"a locked-out address got {g!r}"
        c.expect_closed()
        c.close()
        refused += 1
    # Another address still logs in.
    c = Client(t, port, source="127.0.0.6")
    c.login("alice", "alice-pw")
    c.quit()
    c.close()

    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 1)
    expected = {
        E("pop3_lockouts_total"): 1,
        E("pop3_connections_refused_total", reason="lockout"): refused,
        E("pop3_logins_total", result="failure", mechanism="USER", tls="no"): 3,
        E("pop3_logins_total", result="success", mechanism="USER", tls="no"): 1,
        E("pop3_logins_total", result="refused", mechanism="USER", tls="no"): 1,
        E("pop3_in_use_refusals_total"): 0,
        # refused connections were accepted first: they count here too
        E("pop3_connections_total", listener=f"{HOST}:{port}", tls="none"): conns0 + t.connections,
    }
    for kw, n in t.commands.items():
        expected[E("pop3_commands_total", command=kw)] = n
    bad = compare(sc, expected, ["pop3_connections_refused_total", "pop3_logins_total", "pop3_commands_total"])
    assert not bad, ("lockout metrics differ:\n  " + "\n  ".join(bad)
                     + f"\n---\n{sc.text}")


# --------------------------------------------------------------------------
# a''. TLS counters and the certificate-expiry gauge
# --------------------------------------------------------------------------


def not_after(cert: Path) -> int:
    r = run(["openssl", "x509", "-noout", "-enddate", "-in", cert])
    assert r.returncode == 0, r.stderr
    return int(ssl.cert_time_to_seconds(r.stdout.strip().split("=", 1)[1]))


def make_leaf(ca, name: str, days: int, sans: str) -> tuple[Path, Path]:
    cert, key = ca.dir / f"{name}.pem", ca.dir / f"{name}.key"
    r = run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={name}",
             "-CA", ca.cert, "-CAkey", ca.key, "-addext", f"subjectAltName={sans}",
             "-addext", "extendedKeyUsage=serverAuth"])
    assert r.returncode == 0, r.stderr
    return cert, key


def test_tls_metrics_and_certificate_expiry(postie, tmp_path):

    pki = make_pki(tmp_path / "pki")
    # An SNI certificate that expires long before the default one (30 days): the gauge is
    # the earliest notAfter of all configured certificates.
    sni_src, sni_key_src = make_leaf(pki.ca, "sni-short", 5, "DNS:short.test")
    sni_cert, sni_key = tmp_path / "sni.pem", tmp_path / "sni.key"
    shutil.copyfile(sni_src, sni_cert)
    shutil.copyfile(sni_key_src, sni_key)
    Maildir(tmp_path / "mail" / "alice").create().deliver(b"Subject: tls\n\nover tls\n")
    mport = free_port()
    srv = start_tls_server(postie, tmp_path, pki,
                                  extra=["--metrics", f"{HOST}:{mport}", "--tls-sni", f"short.test={sni_cert}:{sni_key}"],
                                  config=QUICK_CONFIG, name="tlsmetrics")
    plain, implicit = f"{HOST}:{srv.plain}", f"{HOST}:{srv.tls}"
    sc = wait_metrics(mport, lambda sc: True)
    want = not_after(sni_cert)
    assert not_after(srv.cert) > want
    got = sc.get("pop3_tls_certificate_expiry_timestamp_seconds")
    assert sc.types.get("pop3_tls_certificate_expiry_timestamp_seconds") == "gauge", sc.text
    assert got == want, (f"pop3_tls_certificate_expiry_timestamp_seconds = {got:.0f}, want {want} "
                         f"(the SNI certificate's notAfter; the default one's is {not_after(srv.cert)})")

    # The readiness probe connected to the STLS listener once; nothing touched the other yet.
    base = wait_metrics(mport, lambda sc: sc.get("pop3_connections_total", listener=plain, tls="none") >= 1)
    c0_plain = base.get("pop3_connections_total", listener=plain, tls="none")
    c0_tls = base.get("pop3_connections_total", listener=implicit, tls="implicit")
    hf0 = base.get("pop3_tls_handshake_failures_total", listener=implicit)
    ctx = client_context(pki.cafile)
    # STLS, then a login over TLS.
    with POP3Raw(HOST, srv.plain) as c:
        c.ok("STLS")
        c.starttls(ctx)
        c.login("alice", "Alice-S3cret!pw")
        c.retr(1)
        c.ok("QUIT")
    # Implicit TLS.
    with POP3Raw(HOST, srv.tls, tls=ctx) as c:
        c.login("bob", "bob-plain-pw")
        c.ok("QUIT")
    # Plaintext on the implicit-TLS port: the handshake fails.
    with POP3Raw(HOST, srv.tls, read_greeting=False, timeout=5) as c:
        c.send(b"USER alice\r\n")
        try:
            c.expect_closed()
        except (OSError, ProtocolError):
            pass
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 2
                      and sc.get("pop3_tls_handshake_failures_total", listener=implicit) >= hf0 + 1)
    expected = {
        E("pop3_starttls_total", listener=plain): 1,
        E("pop3_connections_total", listener=plain, tls="none"): c0_plain + 1,
        E("pop3_connections_total", listener=implicit, tls="implicit"): c0_tls + 2,
        E("pop3_tls_handshake_failures_total", listener=implicit): hf0 + 1,
        E("pop3_logins_total", result="success", mechanism="USER", tls="yes"): 2,
        E("pop3_session_duration_seconds_count"): 2,
    }
    bad = compare(sc, expected, ["pop3_logins_total", "pop3_starttls_total"])
    assert not bad, "TLS metrics differ:\n  " + "\n  ".join(bad) + "\n---\n" + sc.text

    # SIGHUP with a longer-lived SNI certificate: the gauge follows.
    new_src, new_key_src = make_leaf(pki.ca, "sni-longer", 20, "DNS:short.test")
    for src, dst in ((new_src, sni_cert), (new_key_src, sni_key)):
        tmp = dst.with_name(dst.name + ".new")
        shutil.copyfile(src, tmp)
        os.rename(tmp, dst)
    want2 = min(not_after(sni_cert), not_after(srv.cert))
    assert want2 != want
    srv.hup()
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_tls_certificate_expiry_timestamp_seconds") == want2)
    got = sc.get("pop3_tls_certificate_expiry_timestamp_seconds")
    assert got == want2, f"after SIGHUP the expiry gauge is {got:.0f}, want {want2} (was {want})"
