"""`postie check HOST` against Dovecot (Debian's dovecot-pop3d): a self-signed certificate
(CRITICAL without --ca-file, fine with it), an expired certificate, an incomplete chain, no
STLS, TLS 1.0 still accepted, plaintext login offered before TLS, and the client library
(through `--login-method`) with each SASL mechanism, USER/PASS, STLS and port 995, pipelining,
and the [AUTH] and [IN-USE] errors; then servers that break the protocol or go silent."""

from __future__ import annotations

import poplib
import re
import time

import pytest

from kits.check import (  # noqa: F401 - pki is a fixture
    MAILBOX_SIZE, items, parse_perfdata, password_file, pki, run_check, run_json, start_dovecot_with, verdict,
)
from kits.launcher import free_port, HOST
from kits.mail import BOB
from kits.scripted import ScriptedServer, ScriptedSession


# --------------------------------------------------------------------------
# Against Dovecot
# --------------------------------------------------------------------------


def test_dovecot_self_signed(postie_bin, dovecot, pki):
    """Untrusted (self-signed) certificate: CRITICAL without --ca-file; trusted with it."""
    d = start_dovecot_with(dovecot, pki.self_signed.cert, pki.self_signed.key)
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port)
    assert r.code == 2, r
    for port in (d.port, d.tls_port):
        assert verdict(doc, f"tls.{port}.trust") == "FAIL", doc["items"]
        assert "self-signed" in items(doc)[f"tls.{port}.trust"]["detail"]
        assert verdict(doc, f"tls.{port}.chain") == "OK"
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.self_signed.cert)
    assert r.code != 2, r
    for port in (d.port, d.tls_port):
        for what in ("trust", "chain", "validity", "name"):
            assert verdict(doc, f"tls.{port}.{what}") == "OK", (what, doc["items"])
    assert verdict(doc, "pop3.stls_injection") == "OK"  # Dovecot discards them too
    assert not [i for i in doc["items"] if i["verdict"] == "FAIL"], doc["items"]


def test_dovecot_expired_certificate(postie_bin, dovecot, pki):
    d = start_dovecot_with(dovecot, pki.expired.cert, pki.expired.key)
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.code == 2, r
    for port in (d.port, d.tls_port):
        item = items(doc)[f"tls.{port}.validity"]
        assert item["verdict"] == "FAIL" and "expired" in item["detail"] and "Renew" in item["remedy"], item
        assert verdict(doc, f"tls.{port}.trust") == "OK"  # the CA is right; only the dates are not
    assert doc["facts"]["cert_days"] in (-2, -3)
    r = run_check(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.perfdata["cert_days"].value in (-2, -3), r.status_line


def test_dovecot_incomplete_chain(postie_bin, dovecot, pki):
    """A leaf signed by an intermediate the server does not send: CRITICAL; with the full chain configured: OK."""
    d = start_dovecot_with(dovecot, pki.chained.cert, pki.chained.key)
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.code == 2, r
    item = items(doc)[f"tls.{d.port}.chain"]
    assert item["verdict"] == "FAIL" and "incomplete" in item["detail"] and "Intermediate" in item["detail"], item
    assert verdict(doc, f"tls.{d.port}.trust") == "INFO"  # one problem, reported once
    assert "fullchain" in item["remedy"]
    d.stop()
    d2 = start_dovecot_with(dovecot, pki.chained_full, pki.chained.key)
    r, doc = run_json(postie_bin, d2.host, "--port", d2.port, "--tls-port", d2.tls_port, "--ca-file", pki.root.cert)
    assert r.code != 2, r
    assert verdict(doc, f"tls.{d2.port}.chain") == "OK" and verdict(doc, f"tls.{d2.port}.trust") == "OK"
    assert "2 certificates" in items(doc)[f"tls.{d2.port}.chain"]["detail"]


def test_dovecot_without_stls(postie_bin, dovecot):
    """ssl = no: no STLS and nothing on 995: CRITICAL; USER offered in plaintext: WARN."""
    d = start_dovecot_with(dovecot, None, None)
    closed = free_port()
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", closed)
    assert r.code == 2, r
    assert verdict(doc, "pop3.stls") == "FAIL" and "no STLS" in items(doc)["pop3.stls"]["detail"]
    assert verdict(doc, "pop3.plaintext") == "WARN"
    assert "connection refused" in items(doc)["pop3s.connect"]["detail"]
    r = run_check(postie_bin, d.host, "--port", d.port, "--tls-port", "0")
    assert r.code == 2 and "no STLS" in r.status_line, r


def test_dovecot_tls10_still_enabled(postie_bin, dovecot, pki):
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key, ssl_min_protocol="TLSv1",
                           ssl_cipher_list="DEFAULT@SECLEVEL=0")
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.code == 1, r
    for port in (d.port, d.tls_port):
        item = items(doc)[f"tls.{port}.legacy"]
        assert item["verdict"] == "WARN" and "ssl_min_protocol" in item["remedy"], item
        # Offered 1.0 and 1.1, Dovecot picks 1.1; offered 1.0 alone, it takes that too.
        assert [v.split()[0] for v in doc["facts"][f"tls.{port}.legacy.accepted"]] == ["TLSv1.1", "TLSv1"], item
    # the normal handshake still negotiates the best version
    assert doc["facts"][f"tls.{d.port}.version"] == "TLSv1.3"


def test_dovecot_plaintext_login_warning(postie_bin, dovecot, pki):
    """Dovecot offering USER and SASL PLAIN/LOGIN before TLS: WARNING, everything else OK."""
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key)
    r = run_check(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert)
    assert r.code == 1 and r.status_line.startswith("POP3 WARNING - no plaintext login before TLS"), r
    assert re.search(r"^  WARN +no plaintext login before TLS .*USER/PASS and SASL PLAIN and SASL LOGIN", r.stdout, re.M), r
    assert "disable_plaintext_auth" in r.stdout
    parse_perfdata(r.status_line)


@pytest.mark.parametrize("method", ["USER", "APOP", "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256",
                                    "auto"])
def test_dovecot_login_each_method(postie_bin, dovecot, pki, tmp_path, method):
    """The client library against Dovecot: STLS, CAPA before/after TLS and after login, each
    mechanism, STAT, NOOP+STAT pipelined (Dovecot offers PIPELINING), LIST, UIDL, TOP, QUIT."""
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key,
                           auth_mechanisms="plain login cram-md5 scram-sha-1 scram-sha-256 apop")
    pw = password_file(tmp_path, BOB[1])
    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", d.tls_port, "--ca-file", pki.root.cert,
                      "--user", "bob", "--password-file", pw, "--login-method", method, "--transcript")
    assert r.code == 1, r  # only the plaintext warning
    login = items(doc)["login"]
    expect = "SCRAM-SHA-256" if method == "auto" else method
    assert login["verdict"] == "OK" and f"with {expect} over STLS" in login["detail"], login
    assert doc["facts"]["messages"] == 2 and doc["facts"]["mailbox_size"] == MAILBOX_SIZE
    assert verdict(doc, "mailbox") == "OK"
    sent = [t["text"] for t in doc["transcript"] if t["connection"].startswith("login") and t["direction"] == "C"]
    assert "NOOP" in sent and "TOP 1 0" in sent and "UIDL" in sent and sent[-1] == "QUIT", sent
    if method == "APOP":
        assert "APOP bob <hidden>" in sent, sent
    assert BOB[1] not in r.stdout


def test_dovecot_login_over_995(postie_bin, dovecot, pki, tmp_path):
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key)
    pw = password_file(tmp_path, BOB[1])
    r, doc = run_json(postie_bin, d.host, "--port", "0", "--tls-port", d.tls_port, "--ca-file", pki.root.cert,
                      "--user", "bob", "--password-file", pw)
    assert r.code == 0, r
    assert f"over TLS on port {d.tls_port}" in items(doc)["login"]["detail"]
    assert doc["facts"]["messages"] == 2


def test_dovecot_login_errors(postie_bin, dovecot, pki, tmp_path):
    """[AUTH] for a wrong password (CRITICAL); [IN-USE] while another session holds the
    mailbox (WARNING, Dovecot with pop3_lock_session = yes); no login over untrusted TLS."""
    d = start_dovecot_with(dovecot, pki.good.cert, pki.good.key, extra_conf="protocol pop3 {\n  pop3_lock_session = yes\n}\n")
    base = [d.host, "--port", d.port, "--tls-port", "0", "--ca-file", pki.root.cert, "--user", "bob"]
    r, doc = run_json(postie_bin, *base, "--login-method", "PLAIN", env={"POSTIE_PASSWORD": "wrong-password"})
    assert r.code == 2 and verdict(doc, "login") == "FAIL", r
    assert "[AUTH]" in items(doc)["login"]["detail"], items(doc)["login"]

    holder = poplib.POP3(d.host, d.port, timeout=10)
    try:
        holder.user("bob")
        holder.pass_(BOB[1])
        # Dovecot waits about 10 s for the lock before it answers [IN-USE].
        r, doc = run_json(postie_bin, *base, "--timeout", "30", env={"POSTIE_PASSWORD": BOB[1]})
    finally:
        holder.quit()
    assert verdict(doc, "login") == "WARN" and "[IN-USE]" in items(doc)["login"]["detail"], items(doc)["login"]
    assert r.code == 1, r

    r, doc = run_json(postie_bin, d.host, "--port", d.port, "--tls-port", "0", "--user", "bob",
                      env={"POSTIE_PASSWORD": BOB[1]})  # no --ca-file: the test CA is not trusted
    assert r.code == 2 and verdict(doc, "login") == "UNKNOWN" and "not attempted" in items(doc)["login"]["detail"]


class BrokenServer(ScriptedServer):
    """Answers every connection with `greeting`, then `+OK` to CAPA (listing STLS) and to STLS,
    and closes instead of starting TLS: a misconfigured server whose STLS is advertised but broken."""

    capabilities = ["STLS", "USER"]
    replies = {}
    unknown = "+OK"

    def __init__(self, greeting: str, hang: float = 0):
        self.greeting = greeting
        self.hang = hang  # seconds to stay silent after +OK to STLS before closing
        super().__init__(timeout=5, backlog=8)

    def command(self, s: ScriptedSession, word: str, args: list[str]) -> bool:
        if word == "STLS":
            s.reply("+OK")
            s.sock.recv(4096)  # the ClientHello, never answered
            time.sleep(self.hang)
            return False
        return super().command(s, word, args)


def test_broken_stls_and_bad_greeting(postie_bin):
    s = BrokenServer("+OK hello")
    try:
        r, doc = run_json(postie_bin, HOST, "--port", s.port, "--tls-port", "0")
    finally:
        s.close()
    assert r.code == 2, r
    item = items(doc)["pop3.stls"]
    assert item["verdict"] == "FAIL" and item["detail"].startswith("STLS failed") and item["remedy"], item
    assert "pop3.stls_injection" not in items(doc)  # meaningless when STLS itself fails
    assert "pop3.capa" in items(doc) and verdict(doc, "pop3.plaintext") == "WARN"
    s = BrokenServer("-ERR too busy")
    try:
        r, doc = run_json(postie_bin, HOST, "--port", s.port, "--tls-port", "0")
    finally:
        s.close()
    assert r.code == 2 and verdict(doc, "pop3.greeting") == "FAIL", r
    assert "too busy" in items(doc)["pop3.greeting"]["detail"]
    assert "pop3.stls" not in items(doc)  # no second complaint about a server that never got that far


def test_silent_server_times_out(postie_bin):
    """A server that never answers the ClientHello: the handshake gives up after --timeout."""
    s = BrokenServer("+OK hello", hang=10)
    try:
        r, doc = run_json(postie_bin, HOST, "--port", s.port, "--tls-port", "0", "--timeout", "3")
    finally:
        s.close()
    assert r.code == 2, r
    assert "timed out after 3 s during the TLS handshake" in items(doc)["pop3.stls"]["detail"], items(doc)["pop3.stls"]
